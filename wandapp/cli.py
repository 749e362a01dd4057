"""`wandapp` command line: one subcommand per stage; argument parsing only, the work lives in the package."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys

from . import __version__
from .commands import optional_commands
from .errors import WandappError

# Each module defines register(subparsers) and sets `func` on its parser. Order is the order in --help.
COMMANDS = ["convert", "calibrate", "prune", "ppl", "tasks", "lora", "report", "gpu_slot"]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole CLI, or with `only` (a COMMANDS module name) just that subcommand: its module alone is imported."""
    parser = argparse.ArgumentParser(
        prog="wandapp",
        description="Prune LLMs block by block (Wanda++, Wanda, SparseGPT, magnitude), evaluate and benchmark them.",
    )
    parser.add_argument("--version", action="version", version=f"wandapp {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in [only] if only else COMMANDS:
        try:
            module = importlib.import_module(f"wandapp.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"wandapp.commands.{name}":
                continue  # stage not built yet
            raise
        module.register(sub)
    for pkg, name in [] if only else optional_commands():
        importlib.import_module(f"wandapp.{pkg}.commands.{name}").register(sub)
    return parser


def _job_log(command: str):
    """Start/end lines in the job's log (runinfo.job_log) when WANDAPP_JOB_LOG is set (the workflow's jobs and
    gpu-slot's commands set it; an interactive error stays one line); gpu-slot logs its own."""
    if command == "gpu-slot" or not os.environ.get("WANDAPP_JOB_LOG"):
        return contextlib.nullcontext()
    from .runinfo import job_log

    return job_log(command)


def _gguf_scope(command: str):
    """Every load of one command shares one parse of a GGUF file (gguf_once); gpu-slot loads no model and stays
    light (no numpy, no torch)."""
    if command == "gpu-slot":
        return contextlib.nullcontext()
    from .gguf_once import gguf_parsed_once

    return gguf_parsed_once()


def _named_command(argv: list[str]) -> str | None:
    """The COMMANDS module of the subcommand in argv, or None (options only, a wing's or an unknown command).
    Light commands stay light: `wandapp gpu-slot` wraps every GPU job and must not import torch."""
    name = next((a for a in argv if not a.startswith("-")), "").replace("-", "_")
    return name if name in COMMANDS else None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(_named_command(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s: %(message)s"
    )
    try:
        with _job_log(args.command), _gguf_scope(args.command):
            args.func(args)
    except WandappError as e:
        print(f"wandapp {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"wandapp {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
