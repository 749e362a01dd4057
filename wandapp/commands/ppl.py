"""`wandapp ppl`: perplexity on WikiText-2 or held-out C4 by the standard protocol."""

from __future__ import annotations

from .common import (
    add_data_option,
    add_file_output,
    add_model_options,
    add_stream_option,
    check_model,
    check_output,
    device_and_dtype,
    require_at_least,
    use_stream,
)


def register(sub) -> None:
    p = sub.add_parser(
        "ppl", help="perplexity on wikitext2 or c4",
        description="Perplexity by the Wanda/SparseGPT protocol: the test text joined with blank lines, "
                    "non-overlapping windows of --seqlen tokens, logits upcast to float32.")
    add_model_options(p)
    p.add_argument("--dataset", default="wikitext2", choices=["wikitext2", "c4"],
                   help="wikitext2 (wikitext-2-raw-v1) or c4 (held-out C4; see `wandapp.data` for which documents)")
    p.add_argument("--split", default="test", choices=["test", "validation"],
                   help="WikiText-2 split (default test; tune on validation)")
    p.add_argument("--seqlen", type=int, default=2048, help="window length in tokens (default 2048)")
    p.add_argument("--max-windows", type=int, default=None,
                   help="evaluate only the first N >= 1 windows (quick runs; default: all)")
    p.add_argument("--batch-size", type=int, default=1, help="windows per forward pass (default 1)")
    p.add_argument("--offload", action="store_true",
                   help="run block by block with one block on the device (models larger than the accelerator)")
    add_stream_option(p, "evaluate")
    add_data_option(p)
    add_file_output(p, "results JSON")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..data import data_root, eval_tokens
    from ..evaluate.ppl import perplexity
    from ..io import write_json
    from ..models import load_model
    from ..runinfo import measured, versions

    check_output(args, folder=False)
    require_at_least(args, seqlen=2, batch_size=1, max_windows=1)
    device, dtype = device_and_dtype(args)
    root = data_root(args.data_dir)  # fail on a bad folder before loading the model
    source = check_model(args)
    weights, stream = None, use_stream(args, dtype)
    if stream:  # the skeleton holds embeddings, norm and head; each block is read when the walk reaches it
        from ..models import load_tokenizer, parse_dtype
        from ..stream import StreamedModel

        streamed = StreamedModel(source, parse_dtype(dtype))
        model, tokenizer, weights = streamed.model, load_tokenizer(source), streamed.weights(device)
    else:
        model, tokenizer = load_model(source, dtype, "cpu")
    needed = args.seqlen * args.max_windows if args.max_windows else None  # only the first windows are read
    tokens, label = eval_tokens(args.dataset, tokenizer, root, args.split, max_tokens=needed)
    with measured(device) as info:
        result = perplexity(model, tokens, args.seqlen, device, args.max_windows, args.batch_size, args.offload,
                            weights=weights)
    out = {"model": args.model, "dataset": args.dataset, "split": args.split if args.dataset == "wikitext2" else None,
           "text": label, "dtype": dtype, "device": str(device), **result, **info, "versions": versions()}
    if stream:
        weights.close()
        out["stream"] = True
    write_json(args.output, out)
    print(f"{args.dataset} ppl {result['ppl']:.4f} ({result['windows']} windows of {args.seqlen})")
