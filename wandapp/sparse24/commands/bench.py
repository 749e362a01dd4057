"""`wandapp bench`: dense against 2:4 sparse kernels for a pruned model, per linear shape and end to end."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ...commands.common import add_file_output, add_pickle_option, check_model, check_output, require_at_least
from ...errors import WandappError
from ...io import write_json
from .. import INSTALL, missing

log = logging.getLogger("wandapp.bench")


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v)
    except ValueError:
        raise WandappError(f"expected comma-separated integers, got {text!r}") from None


def _pairs(batches: str, lengths: str) -> tuple[tuple[int, int], ...]:
    return tuple((b, n) for b in _ints(batches) for n in _ints(lengths))


def register(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="time dense vs 2:4 sparse kernels (per linear shape and end to end) on a GPU",
        description="Swap a 2:4 pruned model's linears for cuSPARSELt or CUTLASS kernels (dense where sparse loses); "
        "check outputs against the dense model, time both with CUDA graphs. With no GPU it records a skipped result.",
    )
    p.add_argument("--model", required=True, help="2:4 pruned model (folder, hub id, .gguf)")
    add_pickle_option(p)
    add_file_output(p, "results JSON file, written once when the run ends (partial results go to the hidden sibling "
                    ".NAME.partial until then)")
    p.add_argument("--device", default="cuda", help="CUDA device (default cuda)")
    p.add_argument("--dtype", default="float16", help="float16 or bfloat16 (default float16)")
    p.add_argument("--tokens", default="1,16,64,128,256,512,1024,2048,4096,8192", help="token counts per linear")
    p.add_argument("--batch-sizes", default="1,4", help="prefill and decode batch sizes")
    p.add_argument("--prompt-lengths", default="512,2048", help="prefill prompt lengths")
    p.add_argument("--decode-tokens", type=int, default=64, help="decode steps timed per case")
    p.add_argument("--layouts", default=None,
                   help="how the tuner may pose each product to cuSPARSELt: comma-separated layout names (default: "
                   "the three fastest on an H100, sparseA+y_t,sparseB+y_t,sparseA+y_t+col), 'torch' (torch's own "
                   "only), 'natural' (the 16 that take activations as they come) or 'all' (32); every algorithm id "
                   "of each is timed")
    p.add_argument("--no-fuse-mlp", dest="fuse_mlp", action="store_false",
                   help="run gated MLPs per linear instead of as one fused gate+up product and down_proj")
    p.add_argument("--cutlass", choices=("auto", "on", "off"), default="auto",
                   help="also tune CUTLASS's sm90 2:4 kernels (Hopper, float16; built with nvcc and the CUTLASS "
                   f"headers on first use ({INSTALL}), or WANDAPP_CUTLASS_SPARSE=prebuilt.so): auto uses them where "
                   "they can run")
    p.add_argument("--no-compile", dest="compile_blocks", action="store_false",
                   help="skip the prefill timings with torch.compile'd decoder blocks (they compile once per shape)")
    shapes = p.add_mutually_exclusive_group()
    shapes.add_argument("--shapes-from-model", action="store_true", default=True,
                        help="sweep the model's own linear shapes (default)")
    shapes.add_argument("--llama7b-shapes", action="store_true", help="sweep LLaMA-7B linear shapes instead")
    p.set_defaults(func=run)


def _check_extra(args) -> None:
    """--cutlass on builds the kernels from nvidia-cutlass's headers unless a library or a checkout is named."""
    if args.cutlass == "on" and not (os.environ.get("WANDAPP_CUTLASS_SPARSE") or os.environ.get("CUTLASS_PATH")):
        if missing():
            raise WandappError(f"--cutlass on needs {', '.join(missing())}: {INSTALL}")


def run(args) -> None:
    _check_extra(args)
    import torch

    from ...models import load_model, parse_dtype
    from ..cusparselt import DEFAULT_LAYOUTS, parse_layouts
    from ..runner import model_shapes, run_bench, skipped_result

    check_output(args, folder=False)
    require_at_least(args, decode_tokens=1)
    for option in ("tokens", "batch_sizes", "prompt_lengths"):
        if not _ints(getattr(args, option)) or min(_ints(getattr(args, option))) < 1:
            raise WandappError(f"--{option.replace('_', '-')} must list integers >= 1; got {getattr(args, option)!r}")
    try:
        layouts = parse_layouts(args.layouts or DEFAULT_LAYOUTS)
    except ValueError as e:
        raise WandappError(str(e)) from None
    source = check_model(args)  # a mistyped path fails here too, not only where a GPU would load it
    dtype = parse_dtype(args.dtype)
    if dtype not in (torch.float16, torch.bfloat16):
        raise WandappError(f"2:4 kernels run in float16 or bfloat16, not {args.dtype}")
    try:
        device = torch.device(args.device)
    except (RuntimeError, ValueError):
        raise WandappError(f"unknown device {args.device!r}; 2:4 kernels need a CUDA device, e.g. cuda:1") from None
    if device.type != "cuda" or not torch.cuda.is_available():
        write_json(args.output, skipped_result("no CUDA device"))
        log.warning("no CUDA device: wrote a skipped result to %s", args.output)
        return
    if not torch.backends.cusparselt.is_available():
        write_json(args.output, skipped_result("this torch build has no cuSPARSELt"))
        log.warning("no cuSPARSELt in this torch build: wrote a skipped result to %s", args.output)
        return
    model, _ = load_model(source, dtype=dtype, device=device)
    partial = partial_path(args.output)
    if args.llama7b_shapes:
        from ..linear_sweep import LLAMA7B_SHAPES as shapes
    else:
        shapes = model_shapes(model)
    result = run_bench(model, shapes, device, dtype=dtype, tokens=_ints(args.tokens),
                       prefill_cases=_pairs(args.batch_sizes, args.prompt_lengths),
                       decode_cases=_pairs(args.batch_sizes, "512"), decode_steps=args.decode_tokens,
                       log=log.info, on_partial=lambda r: write_json(partial, r), layouts=layouts,
                       fuse_mlp=args.fuse_mlp, compile_blocks=args.compile_blocks, cutlass=args.cutlass)
    result["model"] = args.model
    write_json(args.output, result)
    partial.unlink(missing_ok=True)


def partial_path(output) -> Path:
    """Where the linear tables go before the end-to-end part: a hidden sibling, so a crash or time-out there keeps
    them without leaving a finished-looking results file (Snakemake would take it for the job's output)."""
    output = Path(output)
    return output.with_name(f".{output.name}.partial")
