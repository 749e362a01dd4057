"""`wandapp calibrate`: sample calibration windows once and cache them for every method."""

from __future__ import annotations

from .common import add_data_option


def add_calibration_options(p) -> None:
    p.add_argument("--calibration", default="c4",
                   help="c4 (Wanda/SparseGPT protocol), wikitext2 (train split), a .jsonl of documents (field "
                        "'text'), a text file, or (prune only) a .safetensors file written by `wandapp calibrate`")
    p.add_argument("--nsamples", type=int, default=128, help="number of calibration windows (default 128)")
    p.add_argument("--seqlen", type=int, default=2048,
                   help="tokens per window (default 2048; never taken from max_position_embeddings)")
    p.add_argument("--seed", type=int, default=0, help="seed of the window sampler and of Wanda++'s RO draws")
    add_data_option(p)


def register(sub) -> None:
    p = sub.add_parser("calibrate", help="sample calibration token windows and save them (.safetensors)",
                       description="Tokenize and sample calibration windows once; `wandapp prune --calibration "
                                   "FILE.safetensors` then reuses them for every method and sparsity.")
    p.add_argument("--model", required=True, help="model whose tokenizer to use (hub id, folder, .gguf, 'smollm2')")
    add_calibration_options(p)
    p.add_argument("--output", required=True, help="output .safetensors file (written atomically)")
    p.set_defaults(func=run)


def check_calibration_source(args) -> None:
    """Fail on a bad data folder or calibration source before anything slow (model loading) starts."""
    from pathlib import Path

    from ..data import data_root
    from ..errors import DataError

    if args.calibration in ("c4", "wikitext2"):
        data_root(args.data_dir)
    elif not Path(args.calibration).expanduser().is_file():
        raise DataError(f"unknown calibration source {args.calibration!r}: not c4, wikitext2 or an existing file")


def calibration_ids(args, tokenizer):
    """Token windows for prune/calibrate: from a cached file or sampled now."""
    import torch

    from ..data import calibration_windows, data_root, load_calibration
    from ..errors import WandappError

    if args.calibration.endswith(".safetensors"):
        ids, meta = load_calibration(args.calibration)
        if ids.dim() != 2 or ids.dtype != torch.long:
            raise WandappError(f"{args.calibration}: input_ids must be a 2-D int64 tensor")
        return ids, {"source": meta.get("source", args.calibration), "file": args.calibration,
                     "nsamples": ids.shape[0], "seqlen": ids.shape[1], "seed": meta.get("seed")}
    ids = calibration_windows(args.calibration, tokenizer, args.nsamples, args.seqlen, args.seed,
                              data_root(args.data_dir))
    return ids, {"source": args.calibration, "nsamples": args.nsamples, "seqlen": args.seqlen, "seed": args.seed}


def run(args) -> None:
    from ..data import save_calibration
    from ..models import load_tokenizer

    check_calibration_source(args)
    tokenizer = load_tokenizer(args.model)
    ids, meta = calibration_ids(args, tokenizer)
    save_calibration(args.output, ids, {**meta, "tokenizer": args.model})
    print(f"wrote {ids.shape[0]} x {ids.shape[1]} calibration tokens to {args.output}")
