"""Perplexity table: dense and pruned models on WikiText-2 validation and test (GPU benchmark).

Each run is METHOD@SPARSITY[@key=value,key=value], e.g. `wanda++@2:4@ro_lr=3e-5,alpha=10`; `dense` is the
unpruned model. The model is loaded once; every run starts from its dense weights. Results go to --output as
JSON lines (one per run, appended as they finish) and a Markdown table is printed at the end.

    python -m benchmarks.pruning.quality --model smollm2 --data-dir DATA --runs dense wanda@2:4 wanda++@2:4 \\
        --output q.jsonl
"""

from __future__ import annotations

import argparse
import json

import torch

from benchmarks.pruning.runs import add_run_args, parse_run
from wandapp.codeversion import stage_code_hash
from wandapp.data import calibration_windows, data_root, eval_tokens
from wandapp.evaluate.ppl import perplexity
from wandapp.masks import SparsityPattern
from wandapp.methods import build_method
from wandapp.models import load_model
from wandapp.prune_report import sparsity_summary
from wandapp.runinfo import measured
from wandapp.walker import prune_model


def best_run(path: str) -> dict:
    """Hyperparameters of the Wanda++ run with the lowest WikiText-2 *validation* perplexity in a results file."""
    rows = [json.loads(line) for line in open(path) if line.strip()]
    rows = [r for r in rows if r["method"] == "wanda++" and "ppl_validation" in r]
    best = min(rows, key=lambda r: r["ppl_validation"])
    print(f"tuned = {best['run']} (validation ppl {best['ppl_validation']})", flush=True)
    return best["hyper"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(ap)
    ap.add_argument("--splits", default="validation,test")
    ap.add_argument("--runs", nargs="+", required=True)
    ap.add_argument("--tuned-from", default=None,
                    help="results file: a run's hyper string 'best' means the best Wanda++ setting found there")
    ap.add_argument("--output", required=True)
    ap.add_argument("--compile", action="store_true", help="prune with torch.compile (wandapp prune --compile)")
    args = ap.parse_args()

    device = torch.device(args.device)
    root = data_root(args.data_dir)
    model, tok = load_model(args.model, args.dtype, "cpu")
    dense_state = {k: v.clone() for k, v in model.state_dict().items()}
    calib = calibration_windows("c4", tok, args.nsamples, args.seqlen, args.seed, root)
    texts = {s: eval_tokens("wikitext2", tok, root, s)[0] for s in args.splits.split(",")}
    rows = []
    tuned = best_run(args.tuned_from) if args.tuned_from else None
    options = {"compile": True} if args.compile else {}  # only a tree with the option (old sides run without)
    for run in args.runs:
        method, sparsity, hyper, preset = parse_run(run.replace("@best", ""))
        if run.endswith("@best"):
            hyper = dict(tuned)
        model.load_state_dict(dense_state)
        model.to(device)
        row = {"run": run, "method": method, "sparsity": sparsity or "dense", "preset": preset, "hyper": hyper,
               "code": stage_code_hash("prune"), **options}  # code: which version of the pruning code measured it
        if method != "dense":
            pattern = SparsityPattern.parse(sparsity)
            m = build_method(method, pattern, preset, **{"seed": args.seed, **hyper})  # seed: where a method has one
            with measured(device) as info:
                logs = prune_model(model, calib, m, device, offload=False, micro_batch=args.micro_batch, **options)
            gpu_bytes = info["peak_gpu_mem_bytes"]
            row.update(prune_s=round(info["wall_time_s"], 2), hyperparameters=m.hyperparameters(),
                       sparsity_overall=sparsity_summary(model, pattern)["sparsity_overall"],
                       peak_gpu_gb=round(gpu_bytes / 2**30, 2) if gpu_bytes is not None else None)
            if logs and logs[0].get("ro_rounds"):
                row["ro_loss_first_block"] = [r["ro_loss"] for r in logs[0]["ro_rounds"]]
        for split, tokens in texts.items():
            row[f"ppl_{split}"] = round(perplexity(model, tokens, args.seqlen, device, args.max_windows)["ppl"], 4)
        rows.append(row)
        with open(args.output, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
    cols = ["run", *[f"ppl_{s}" for s in texts], "prune_s", "peak_gpu_gb"]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")


if __name__ == "__main__":
    main()
