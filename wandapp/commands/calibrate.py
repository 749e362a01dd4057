"""`wandapp calibrate`: sample calibration windows once and cache them for every method."""

from __future__ import annotations

from .common import add_data_option, add_file_output


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
    add_file_output(p, "output .safetensors file")
    p.set_defaults(func=run)


def check_calibration_options(args, source=None) -> None:
    """Fail on a bad option, data folder or calibration file before anything slow (model loading) starts; a
    cached file's token ids are checked against the vocabulary in `source`'s config."""
    from pathlib import Path

    from ..data import calibration_file_text, data_root, load_calibration
    from ..errors import DataError
    from .common import require_at_least

    require_at_least(args, nsamples=1, seqlen=2)
    if args.calibration in ("c4", "wikitext2"):
        data_root(args.data_dir)
        return
    path = Path(args.calibration).expanduser()
    if not path.is_file():
        raise DataError(f"unknown calibration source {args.calibration!r}: not c4, wikitext2 or an existing file")
    if path.suffix == ".safetensors":
        from ..data import check_token_ids
        from ..models import vocab_size

        ids, _ = load_calibration(path)
        if source is not None:
            check_token_ids(ids, vocab_size(source), path)
    else:
        calibration_file_text(path)


check_calibration_source = check_calibration_options  # the name prune used before


def calibration_ids(args, tokenizer, vocab_size: int | None = None):
    """Token windows for prune/calibrate: from a cached file or sampled now; ids checked against vocab_size."""
    from ..data import calibration_windows, check_token_ids, data_root, load_calibration

    if args.calibration.endswith(".safetensors"):
        ids, meta = load_calibration(args.calibration)
        check_token_ids(ids, vocab_size, args.calibration)
        return ids, {"source": meta.get("source", args.calibration), "file": args.calibration,
                     "nsamples": ids.shape[0], "seqlen": ids.shape[1], "seed": meta.get("seed")}
    ids = calibration_windows(args.calibration, tokenizer, args.nsamples, args.seqlen, args.seed,
                              data_root(args.data_dir))
    check_token_ids(ids, vocab_size, f"calibration {args.calibration} tokenized by the model's tokenizer")
    return ids, {"source": args.calibration, "nsamples": args.nsamples, "seqlen": args.seqlen, "seed": args.seed}


def run(args) -> None:
    from ..data import save_calibration
    from ..models import load_tokenizer, resolve_model
    from .common import check_output

    check_output(args, folder=False)
    check_calibration_options(args)
    tokenizer = load_tokenizer(resolve_model(args.model, allow_pickle=True))  # no weights are loaded
    ids, meta = calibration_ids(args, tokenizer)
    save_calibration(args.output, ids, {**meta, "tokenizer": args.model})
    print(f"wrote {ids.shape[0]} x {ids.shape[1]} calibration tokens to {args.output}")
