"""Markdown tables from benchmarks/quality.py results: methods x sparsities (test ppl), and the Wanda++ sweep.

    python benchmarks/quality_table.py benchmarks/results/h100_smollm2_quality.jsonl
"""

from __future__ import annotations

import json
import sys


def main(path: str) -> None:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    cells: dict[tuple[str, str], dict] = {}
    tuned = {"ro_lr": 0.0003}  # wandapp.methods.PRESETS["tuned"]
    for r in rows:
        if r["hyper"] in ({}, tuned):  # other settings are sweep points: second table
            cells[(r["method"] + (" (tuned)" if r["hyper"] else ""), r["sparsity"])] = r
    sparsities = ["0.5", "2:4", "4:8"]
    labels = ["dense", "magnitude", "wanda", "sparsegpt", "wanda++-rgs", "wanda++-ro", "wanda++", "wanda++ (tuned)"]
    print("| method | " + " | ".join(f"{s} test (val)" for s in sparsities) + " |")
    print("|---|" + "---|" * len(sparsities))
    for label in labels:
        def cell(s):
            r = cells.get((label, "dense" if label == "dense" else s))
            return f"{r['ppl_test']:.2f} ({r['ppl_validation']:.2f})" if r else "not measured"
        print(f"| {label} | " + " | ".join(cell(s) for s in sparsities) + " |")
    print("\n| Wanda++ 2:4 sweep point (others: paper defaults) | val ppl | test ppl | prune s (H100) |")
    print("|---|---|---|---|")
    for r in rows:
        if r["method"].startswith("wanda++") and r["sparsity"] == "2:4" and r["method"] != "wanda++-rgs":
            setting = ", ".join(f"{k}={v}" for k, v in r["hyper"].items()) or "paper defaults"
            setting += " (RO only: alpha=0)" if r["method"] == "wanda++-ro" else ""
            print(f"| {setting} | {r['ppl_validation']:.2f} | {r['ppl_test']:.2f} | {r['prune_s']} |")


if __name__ == "__main__":
    main(sys.argv[1])
