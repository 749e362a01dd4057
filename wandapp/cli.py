"""`wandapp` command line: one subcommand per stage; argument parsing only, the work lives in the package."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from . import __version__
from .commands import optional_commands
from .errors import WandappError

# Each module defines register(subparsers) and sets `func` on its parser. Order is the order in --help.
COMMANDS = ["convert", "calibrate", "prune", "ppl", "tasks", "lora", "report"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wandapp",
        description="Prune LLMs block by block (Wanda++, Wanda, SparseGPT, magnitude), evaluate and benchmark them.",
    )
    parser.add_argument("--version", action="version", version=f"wandapp {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"wandapp.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"wandapp.commands.{name}":
                continue  # stage not built yet
            raise
        module.register(sub)
    for pkg, name in optional_commands():
        importlib.import_module(f"wandapp.{pkg}.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(name)s: %(message)s"
    )
    try:
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
