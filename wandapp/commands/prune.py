"""`wandapp prune`: prune a model with one method and sparsity; write a save_pretrained folder + prune_report.json."""

from __future__ import annotations

from .calibrate import add_calibration_options
from .common import add_folder_output, add_model_options, device_and_dtype

HYPERPARAMETERS = [
    # flag, type, help (defaults are the paper's; `--preset tuned` swaps in the values tuned on SmolLM2)
    ("--alpha", float, "Wanda++: weight of the regional gradient G in (alpha*G + ||X||)*|W| (default 100)"),
    ("--ro-rounds", int, "Wanda++: K rounds of RGS prune + regional optimisation (default 5)"),
    ("--ro-samples", int, "Wanda++: M calibration samples drawn per RO round (default 32)"),
    ("--ro-lr", float, "Wanda++: RMSprop learning rate of RO (default 3e-7)"),
    ("--ro-batch", int, "Wanda++: samples per RMSprop step (default 1, as the paper's code)"),
    ("--ro-epochs", int, "Wanda++: passes over the M samples per round (default 1)"),
    ("--x-norm", str, "Wanda++: ||X_j|| convention: l2 (all tokens, default), per-sample (/sqrt N), rms"),
    ("--g-norm", str, "Wanda++: G scaling: none (paper, default) or mean (G rescaled to the mean ||X_j||)"),
    ("--loop-norms", str, "Wanda++: in-loop RGS input norms over all N samples (default, method.md's reading) or "
                          "'ro': the round's M RO samples, scaled to N (the authors' code; faster)"),
    ("--precision", str, "Wanda++ on CUDA: bf16 (default: a bfloat16 copy computes, float32 master weights take "
                         "RO's steps), bf16-autocast, tf32 or fp32"),
    ("--blocksize", int, "SparseGPT: columns per lazy-update block (default 128)"),
    ("--percdamp", float, "SparseGPT: Hessian damping as a fraction of its mean diagonal (default 0.01)"),
]


def register(sub) -> None:
    from ..methods import PRESETS, method_names

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
    p.add_argument("--preset", default="paper", choices=list(PRESETS),
                   help="Wanda++ hyperparameter set: paper (the paper's defaults), tuned (RO lr 3e-4, chosen on "
                        "WikiText-2 validation for SmolLM2) or tuned-long (tuned with RO on all 128 calibration "
                        "samples per round: better, about 1.7x slower; see README); explicit options override it")
    for flag, typ, text in HYPERPARAMETERS:
        p.add_argument(flag, type=typ, default=None, help=text)
    p.add_argument("--track-error", action="store_true",
                   help="Wanda++: log the dense-vs-sparse block error before and after each RO round")
    p.add_argument("--keep-on-device", action="store_true",
                   help="keep the whole model on the device (faster when it fits); default: one block at a time")
    p.add_argument("--activations-on-cpu", action="store_true",
                   help="keep calibration hidden states in CPU memory instead of on the device")
    p.add_argument("--micro-batch", type=int, default=4, help="samples per forward pass (default 4)")
    add_folder_output(p)
    p.set_defaults(func=run)


def run(args) -> None:
    import torch

    from ..errors import WandappError
    from ..io import atomic_dir, write_json
    from ..masks import SparsityPattern
    from ..methods import build_method
    from ..models import load_model, save_model
    from ..prune_report import sparsity_summary
    from ..runinfo import measured, versions
    from ..walker import prune_model
    from .calibrate import calibration_ids, check_calibration_options
    from .common import check_model, check_output

    check_output(args, folder=True)
    pattern = SparsityPattern.parse(args.sparsity)
    hyper = {flag.lstrip("-").replace("-", "_"): getattr(args, flag.lstrip("-").replace("-", "_"))
             for flag, _, _ in HYPERPARAMETERS}
    hyper.update(seed=args.seed, track_error=args.track_error or None)
    if args.method.startswith("wanda++"):
        hyper = {k: v for k, v in hyper.items() if k not in ("blocksize", "percdamp")}
    elif args.method == "sparsegpt":
        hyper = {k: hyper[k] for k in ("blocksize", "percdamp")}
    else:
        hyper = {}
    method = build_method(args.method, pattern, args.preset, **hyper)
    if args.micro_batch < 1:
        raise WandappError("--micro-batch must be >= 1")
    device, dtype = device_and_dtype(args)
    source = check_model(args)
    check_calibration_options(args, source)

    torch.manual_seed(args.seed)
    model, tokenizer = load_model(source, dtype, "cpu")
    ids, calib = calibration_ids(args, tokenizer, model.get_input_embeddings().num_embeddings)
    if args.keep_on_device:
        model.to(device)
    with measured(device) as info:
        logs = prune_model(model, ids, method, device, offload=not args.keep_on_device,
                           store="cpu" if args.activations_on_cpu else None, micro_batch=args.micro_batch)
    model.to("cpu")
    report = {
        "model": args.model,
        "method": method.name,
        "sparsity": pattern.label,
        "pattern": {"ratio": pattern.ratio, "n": pattern.n, "m": pattern.m},
        "preset": args.preset if args.method.startswith("wanda++") else None,
        "hyperparameters": method.hyperparameters(),
        "seed": args.seed,
        "calibration": calib,
        "dtype": dtype,
        "device": str(device),
        **sparsity_summary(model, pattern),
        **info,
        "block_logs": logs,
        "versions": versions(),
    }
    with atomic_dir(args.output, overwrite=args.overwrite) as tmp:
        save_model(model, tokenizer, tmp)
        write_json(tmp / "prune_report.json", report)
    print(f"{method.name} {pattern.label}: sparsity {report['sparsity_overall']:.4f} in {info['wall_time_s']:.1f} s "
          f"-> {args.output}")
