"""Options several subcommands share, so their names and help read the same everywhere, and the checks every
command runs on them before any work (model loading included)."""

from __future__ import annotations

import argparse

from ..errors import WandappError

MODEL_HELP = "hub id, save_pretrained folder, .gguf file, or 'smollm2' (embedded)"


def add_model_options(p, model_help: str = MODEL_HELP) -> None:
    p.add_argument("--model", required=True, help=model_help)
    add_pickle_option(p)
    p.add_argument("--device", default=None,
                   help="torch device for the work, e.g. cuda, cuda:1, cpu (default: cuda if available, else cpu)")
    p.add_argument("--dtype", default=None,
                   help="weight dtype: float16, bfloat16 or float32 (default: float16 on GPU, float32 on CPU)")


def add_pickle_option(p) -> None:
    p.add_argument("--allow-pickle", action="store_true",
                   help="load a folder that holds only pickled pytorch_model.bin weights (with torch's "
                        "weights_only loader); by default only safetensors load")


def add_data_option(p) -> None:
    p.add_argument("--data-dir", default=None,
                   help="local data mirror laid out like ../shared/data (default: $WANDAPP_DATA_DIR, else the HF hub)")


def device_and_dtype(args):
    """The device and dtype name for the work; a bad --device or --dtype is a one-line error."""
    from ..models import parse_dtype
    from ..runinfo import default_dtype, resolve_device

    device = resolve_device(args.device)
    dtype = args.dtype or default_dtype(device)
    parse_dtype(dtype)
    return device, dtype


def _overwrite_option(p) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace --output even if it is a file or a folder that wandapp did not write")


def add_stream_option(p, command: str) -> None:
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                   help=f"{command} block by block from the model's safetensors shards or GGUF file, never holding the "
                        "whole model in CPU memory (default: on when the weights would not fit in the memory available "
                        "now)")


def use_stream(args, dtype: str) -> bool:
    """--stream / --no-stream as given, else on when the model folder would not fit in CPU memory."""
    if args.stream is not None:
        return args.stream
    from ..models import parse_dtype
    from ..stream import should_stream

    if should_stream(args.model, parse_dtype(dtype)):
        print(f"{args.model}: larger than the CPU memory available; streaming it block by block (--no-stream: off)")
        return True
    return False


def add_folder_output(p) -> None:
    p.add_argument("--output", required=True,
                   help="folder to write (appears whole or not at all); an existing folder is replaced only if "
                        "wandapp wrote it or it is empty, unless --overwrite")
    _overwrite_option(p)


def add_file_output(p, what: str) -> None:
    p.add_argument("--output", required=True,
                   help=f"{what} (written atomically); an existing file is replaced only with --overwrite")
    _overwrite_option(p)


def check_output(args, folder: bool):
    """Refuse a bad --output (see io.check_output) before any work; every command calls this first."""
    from ..io import check_output as check

    return check(args.output, folder=folder, overwrite=getattr(args, "overwrite", False))


def check_model(args):
    """Resolve --model without loading it: a missing path or pickle-only folder fails here."""
    from ..models import resolve_model

    return resolve_model(args.model, allow_pickle=getattr(args, "allow_pickle", False))


def require_at_least(args, **minimums) -> None:
    """One-line error for the first option below its minimum (options left at None are skipped)."""
    for name, low in minimums.items():
        value = getattr(args, name)
        if value is not None and value < low:
            raise WandappError(f"--{name.replace('_', '-')} must be >= {low:g}; got {value:g}")


def add_rewrite_options(p, model_help: str, dtype: str, dtype_help: str) -> None:
    """The options of a command that loads one model and writes it again as a folder (see rewrite_model)."""
    p.add_argument("--model", required=True, help=model_help)
    p.add_argument("--dtype", default=dtype, help=dtype_help)
    add_pickle_option(p)
    add_folder_output(p)


def rewrite_model(args, write) -> None:
    """Load --model in --dtype on the CPU; write(model, tokenizer, folder) fills --output, which appears whole or
    not at all."""
    from ..io import atomic_dir
    from ..models import load_model, parse_dtype

    check_output(args, folder=True)
    parse_dtype(args.dtype)
    source = check_model(args)
    model, tokenizer = load_model(source, dtype=args.dtype)
    with atomic_dir(args.output, overwrite=args.overwrite) as tmp:
        write(model, tokenizer, tmp)
