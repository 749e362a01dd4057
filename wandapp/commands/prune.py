"""`wandapp prune`: prune a model with one method and sparsity; write a save_pretrained folder + prune_report.json."""

from __future__ import annotations

from .calibrate import add_calibration_options
from .common import add_folder_output, add_model_options, device_and_dtype


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
    add_folder_output(p)
    p.set_defaults(func=run)


def run(args) -> None:
    import torch

    from ..errors import WandappError
    from ..io import atomic_dir, write_json
    from ..masks import SparsityPattern
    from ..methods import build_method, hyperparameter_table
    from ..models import load_model, save_model
    from ..prune_report import sparsity_summary
    from ..runinfo import measured, versions
    from ..walker import prune_model
    from .calibrate import calibration_ids, check_calibration_options
    from .common import check_model, check_output

    check_output(args, folder=True)
    pattern = SparsityPattern.parse(args.sparsity)
    hyper = {name: getattr(args, name) for name in hyperparameter_table()}
    method = build_method(args.method, pattern, args.preset, seed=args.seed, **hyper)
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
        "preset": args.preset if method.presets else None,
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
