"""Options several subcommands share, so their names and help read the same everywhere."""

from __future__ import annotations

import argparse


def add_model_options(p, model_help: str = "hub id, save_pretrained folder, .gguf file, or 'smollm2' (embedded)") -> None:
    p.add_argument("--model", required=True, help=model_help)
    p.add_argument("--device", default=None,
                   help="torch device for the work, e.g. cuda, cuda:1, cpu (default: cuda if available, else cpu)")
    p.add_argument("--dtype", default=None,
                   help="weight dtype: float16, bfloat16 or float32 (default: float16 on GPU, float32 on CPU)")


def add_data_option(p) -> None:
    p.add_argument("--data-dir", default=None,
                   help="local data mirror laid out like ../shared/data (default: $WANDAPP_DATA_DIR, else the HF hub)")


def device_and_dtype(args):
    from ..runinfo import default_dtype, resolve_device

    device = resolve_device(args.device)
    return device, args.dtype or default_dtype(device)


def add_stream_option(p, command: str) -> None:
    p.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                   help=f"{command} block by block from the model's safetensors shards, never holding the whole model "
                        "in CPU memory (default: on when the weights would not fit in the memory available now)")


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
    p.add_argument("--output", required=True, help="folder to write (replaced atomically)")


def rewrite_model(args, write) -> None:
    """Load --model in --dtype on the CPU; write(model, tokenizer, folder) fills --output, which appears whole or
    not at all."""
    from ..io import atomic_dir
    from ..models import load_model

    model, tokenizer = load_model(args.model, dtype=args.dtype)
    with atomic_dir(args.output) as tmp:
        write(model, tokenizer, tmp)
