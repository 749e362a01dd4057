"""Uniform vs OWL layer-wise sparsity: WikiText-2 perplexity of Wanda, SparseGPT and Wanda++ (paper defaults) at
60% and 70% unstructured (GPU benchmark; one command).

The model is loaded once; every run starts from its dense weights and keeps the whole model on the device. One JSON
line per run (appended to --output as it finishes: method, sparsity, profile, perplexity, prune time, measured
sparsity, OWL's per-block ratios), then a Markdown table (methods x profiles, sparsities as columns) written next
to it (--table, default OUTPUT with .md) and printed; the table covers every run in --output, so the sweep may be
split over calls (e.g. one --sparsities value each) appending to one file.

    python -m benchmarks.pruning.owl_sweep --model smollm2 --data-dir ../shared/data \\
        --output benchmarks/results/h200_smollm2_owl.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.pruning.runs import add_run_args
from wandapp.codeversion import stage_code_hash
from wandapp.data import calibration_windows, data_root, eval_tokens
from wandapp.evaluate.ppl import perplexity
from wandapp.io import atomic_file
from wandapp.masks import SparsityPattern
from wandapp.methods import build_method, presets_of
from wandapp.models import load_model
from wandapp.profile import profile_report, with_profile
from wandapp.prune_report import sparsity_summary
from wandapp.runinfo import measured
from wandapp.walker import prune_model


def table(rows: list[dict], sparsities: list[str]) -> str:
    """Perplexity per method and profile (rows) and sparsity (columns); OWL's change against uniform in brackets."""
    ppl = {(r["method"], r["profile"], r["sparsity"]): r["ppl"] for r in rows}
    dense = next((r["ppl"] for r in reversed(rows) if r["method"] == "dense"), None)
    lines = [f"WikiText-2 {rows[0]['split']} perplexity (dense {dense})" if dense else "",
             "", "| method | profile | " + " | ".join(f"{float(s):.0%}" for s in sparsities) + " |",
             "|---|---|" + "---|" * len(sparsities)]
    methods = list(dict.fromkeys(r["method"] for r in rows if r["method"] != "dense"))
    profiles = list(dict.fromkeys(r["profile"] for r in rows if r["method"] != "dense"))
    for m in methods:
        for p in profiles:
            cells = []
            for s in sparsities:
                value, base = ppl.get((m, p, s)), ppl.get((m, "uniform", s))
                cell = "" if value is None else f"{value:.2f}"
                if value is not None and p != "uniform" and base:
                    cell += f" ({(value - base) / base:+.0%})"
                cells.append(cell)
            lines.append(f"| {m} | {p} | " + " | ".join(cells) + " |")
    return "\n".join(lines).lstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(ap)
    ap.add_argument("--split", default="test")
    ap.add_argument("--sparsities", nargs="+", default=["0.6", "0.7"])
    ap.add_argument("--methods", nargs="+", default=["wanda", "sparsegpt", "wanda++"])
    ap.add_argument("--profiles", nargs="+", default=["uniform", "owl"])
    ap.add_argument("--preset", default="paper", help="Wanda++'s preset (paper, tuned, ...); one --output each")
    ap.add_argument("--owl-m", type=float, default=None)
    ap.add_argument("--owl-lambda", type=float, default=None)
    ap.add_argument("--output", required=True, help="JSON lines, appended")
    ap.add_argument("--table", default=None, help="Markdown table (default: --output with .md)")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    root = data_root(args.data_dir)
    model, tok = load_model(args.model, args.dtype, "cpu")
    dense_state = {k: v.clone() for k, v in model.state_dict().items()}
    calib = calibration_windows("c4", tok, args.nsamples, args.seqlen, args.seed, root)
    tokens = eval_tokens("wikitext2", tok, root, args.split)[0]
    common = {"preset": args.preset, "model": args.model, "split": args.split, "seqlen": args.seqlen,
              "nsamples": args.nsamples,
              "device": str(device), "dtype": args.dtype, "code": stage_code_hash("prune")}

    def evaluate(row: dict) -> None:
        row["ppl"] = round(perplexity(model, tokens, args.seqlen, device, args.max_windows)["ppl"], 4)
        rows.append(row)
        with open(args.output, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    rows: list[dict] = []
    model.to(device)
    evaluate({"method": "dense", "sparsity": "dense", "profile": "uniform", **common})
    for sparsity in args.sparsities:
        pattern = SparsityPattern.parse(sparsity)
        for name in args.methods:
            for profile in args.profiles:
                model.load_state_dict(dense_state)
                preset = args.preset if args.preset in presets_of(name) else "paper"  # where the method has it
                method = with_profile(build_method(name, pattern, preset, seed=args.seed), pattern, profile,
                                      args.owl_m, args.owl_lambda)
                with measured(device) as info:
                    prune_model(model, calib, method, device, offload=False, micro_batch=args.micro_batch)
                gpu = info["peak_gpu_mem_bytes"]
                evaluate({"method": name, "sparsity": sparsity, "profile": profile, **common,
                          "prune_s": round(info["wall_time_s"], 2),
                          "peak_gpu_gb": round(gpu / 2**30, 2) if gpu is not None else None,
                          "sparsity_overall": sparsity_summary(model, pattern)["sparsity_overall"],
                          "sparsity_profile": profile_report(method), "hyperparameters": method.hyperparameters()})
    # The table covers every run in the file (the latest per cell), so a sweep split over calls adds up.
    everything = [json.loads(line) for line in open(args.output) if line.strip()]
    text = table(everything, list(dict.fromkeys(r["sparsity"] for r in everything if r["method"] != "dense")))
    with atomic_file(args.table or Path(args.output).with_suffix(".md")) as tmp:
        tmp.write_text(text)
    print("\n" + text)


if __name__ == "__main__":
    main()
