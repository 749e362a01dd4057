"""`wandapp prune`: prune a model with one method and sparsity; write a save_pretrained folder + prune_report.json."""

from __future__ import annotations

from .calibrate import add_calibration_options
from .common import add_folder_output, add_model_options, add_stream_option, device_and_dtype, use_stream


def register(sub) -> None:
    from ..methods import hyperparameter_table, method_names, preset_names

    p = sub.add_parser(
        "prune", help="prune a model block by block and save it",
        description="Prune the seven linears of every decoder block, block by block (only the current block on the "
                    "device), and write a save_pretrained folder with prune_report.json.")
    add_model_options(p)
    p.add_argument("--method", required=True, choices=method_names(), metavar="METHOD",
                   help=f"one of: {', '.join(method_names())}")
    p.add_argument("--sparsity", required=True,
                   help="unstructured ratio in [0, 1) pruned per output row (e.g. 0.5), or N:M such as 2:4 or 4:8 "
                        "(keep N of every M consecutive inputs)")
    add_calibration_options(p)
    p.add_argument("--sparsity-profile", default="uniform", metavar="PROFILE",
                   help="layer-wise sparsity for unstructured patterns: uniform (default: every block at the target) "
                        "or owl (OWL: fewer pruned weights in blocks with more outlier activations; the mean over all "
                        "pruned weights stays the target; per-block ratios in prune_report.json)")
    p.add_argument("--owl-m", type=float, default=None,
                   help="OWL: a Wanda score above M times its block's mean is an outlier (default 5)")
    p.add_argument("--owl-lambda", type=float, default=None,
                   help="OWL: block sparsities stay within the target +- lambda (default 0.08)")
    p.add_argument("--preset", default="paper", choices=preset_names(),
                   help="Wanda++ hyperparameter set: paper (the paper's defaults), tuned (RO lr 3e-4, chosen on "
                        "WikiText-2 validation for SmolLM2) or tuned-long (tuned with RO on all 128 calibration "
                        "samples per round: better, about 1.7x slower; see README); explicit options override it")
    # Each method's own hyperparameters (its dataclass fields), one flag per name; None: not given.
    for h in hyperparameter_table().values():
        if h.type is bool:
            p.add_argument(h.flag, action="store_true", default=None, help=h.description)
        else:
            p.add_argument(h.flag, type=h.type, default=None, help=h.description)
    p.add_argument("--keep-on-device", action="store_true",
                   help="keep the whole model on the device (faster when it fits); default: one block at a time")
    p.add_argument("--activations-on-cpu", action="store_true",
                   help="keep calibration hidden states in CPU memory instead of on the device")
    p.add_argument("--micro-batch", type=int, default=4, help="samples per forward pass (default 4)")
    p.add_argument("--compile", action="store_true",
                   help="run the blocks' forward (and backward) passes through torch.compile (compiled once a run). "
                        "It rounds differently from eager PyTorch, so masks may differ slightly; measured on an "
                        "H100 at LLaMA-7B shapes with a warm compile cache: Wanda 1.08x, Wanda++ 1.24x faster "
                        "(docs/pruning-speed.md)")
    add_stream_option(p, "prune")
    add_folder_output(p)
    p.set_defaults(func=run)


def run(args) -> None:
    import torch

    from ..errors import WandappError
    from ..io import atomic_dir, write_json
    from ..masks import SparsityPattern
    from ..methods import build_method, hyperparameter_table
    from ..models import load_model, save_model
    from ..profile import with_profile
    from ..prune_report import sparsity_summary
    from ..runinfo import measured
    from ..walker import prune_model
    from .calibrate import calibration_ids, check_calibration_options
    from .common import check_model, check_output

    check_output(args, folder=True)
    pattern = SparsityPattern.parse(args.sparsity)
    hyper = {name: getattr(args, name) for name in hyperparameter_table()}
    method = with_profile(build_method(args.method, pattern, args.preset, seed=args.seed, **hyper), pattern,
                          args.sparsity_profile, args.owl_m, args.owl_lambda)
    if args.micro_batch < 1:
        raise WandappError("--micro-batch must be >= 1")
    device, dtype = device_and_dtype(args)
    source = check_model(args)
    check_calibration_options(args, source)

    torch.manual_seed(args.seed)
    stream = use_stream(args, dtype)
    if stream and hasattr(method, "prepare"):  # a pass over the whole dense model first
        raise WandappError(f"--stream does not run {method.name} or the owl profile yet (they need the whole dense "
                           f"model before the walk); prune without --stream")
    if stream:
        return run_streamed(args, source, method, pattern, device, dtype)
    model, tokenizer = load_model(source, dtype, "cpu")
    ids, calib = calibration_ids(args, tokenizer, model.get_input_embeddings().num_embeddings)
    if args.keep_on_device:
        model.to(device)
    with measured(device) as info:
        logs = prune_model(model, ids, method, device, offload=not args.keep_on_device,
                           store="cpu" if args.activations_on_cpu else None, micro_batch=args.micro_batch,
                           compile=args.compile)
    model.to("cpu")
    report = prune_report(args, method, pattern, calib, dtype, device, sparsity_summary(model, pattern), info, logs)
    with atomic_dir(args.output, overwrite=args.overwrite) as tmp:
        save_model(model, tokenizer, tmp)
        write_json(tmp / "prune_report.json", report)
    _done(method, pattern, report, info, args.output)


def run_streamed(args, source, method, pattern, device, dtype) -> None:
    """`prune --stream`: blocks are read from the source shards and written to the output's shards one by one."""
    from ..errors import WandappError
    from ..io import atomic_dir, write_json
    from ..models import load_tokenizer, parse_dtype
    from ..prune_report import SparsityTally
    from ..runinfo import measured
    from ..stream import StreamedModel
    from ..walker import prune_model
    from .calibrate import calibration_ids

    if args.keep_on_device:
        raise WandappError("--keep-on-device and --stream exclude each other")
    streamed = StreamedModel(source, parse_dtype(dtype))
    tokenizer = load_tokenizer(source)
    ids, calib = calibration_ids(args, tokenizer, streamed.model.get_input_embeddings().num_embeddings)
    tally = SparsityTally(pattern)
    with atomic_dir(args.output, overwrite=args.overwrite) as tmp:
        with measured(device) as info:
            weights = streamed.weights(device, tmp, on_done=tally.add_block)
            logs = prune_model(streamed.model, ids, method, device, store="cpu" if args.activations_on_cpu else None,
                               micro_batch=args.micro_batch, weights=weights, compile=args.compile)
        streamed.finish(tmp)
        tokenizer.save_pretrained(tmp)
        report = prune_report(args, method, pattern, calib, dtype, device, tally.summary(), info, logs)
        write_json(tmp / "prune_report.json", {**report, "stream": True})
    _done(method, pattern, report, info, args.output)


def prune_report(args, method, pattern, calib, dtype, device, summary, info, logs) -> dict:
    from ..profile import profile_report
    from ..runinfo import versions

    return {
        "model": args.model,
        "method": method.name,
        "sparsity": pattern.label,
        "pattern": {"ratio": pattern.ratio, "n": pattern.n, "m": pattern.m},
        "preset": args.preset if method.presets else None,
        "hyperparameters": method.hyperparameters(),
        "sparsity_profile": profile_report(method),
        "seed": args.seed,
        "compile": args.compile,
        "calibration": calib,
        "dtype": dtype,
        "device": str(device),
        **summary,
        **info,
        "block_logs": logs,
        "versions": versions(),
    }


def _done(method, pattern, report, info, output) -> None:
    print(f"{method.name} {pattern.label}: sparsity {report['sparsity_overall']:.4f} in {info['wall_time_s']:.1f} s "
          f"-> {output}")
