"""Markdown tables from benchmarks/pruning/quality.py results: methods x sparsities (test ppl), and the Wanda++ sweep.

    python -m benchmarks.pruning.quality_table benchmarks/results/h100_smollm2_quality.jsonl [LATER.jsonl ...]

With several files, a later file's row replaces an earlier one for the same cell, and cells and sweep rows from
the second file on are marked with that file's number (e.g. a newer version of the code measured them).
"""

from __future__ import annotations

import json
import sys

from wandapp.methods import METHODS, PRESETS


def named_preset(row: dict) -> str | None:
    """The preset whose settings a run used exactly (its preset plus its explicit changes), else None."""
    used = {**PRESETS.get(row.get("preset", "paper"), {}), **row["hyper"]}
    return next((name for name, values in PRESETS.items() if values == used), None)


def main(paths: list[str]) -> None:
    rows = []
    for number, path in enumerate(paths, 1):
        rows += [dict(json.loads(line), file=number) for line in open(path) if line.strip()]
    cells: dict[tuple[str, str], dict] = {}
    for r in rows:
        preset = named_preset(r)
        if preset is not None:  # other settings are sweep points: second table
            cells[(r["method"] + (f" ({preset})" if preset != "paper" else ""), r["sparsity"])] = r
    sparsities = ["0.5", "2:4", "4:8"]
    labels = ["dense", *METHODS, *[f"wanda++ ({name})" for name in PRESETS if name != "paper"]]

    def mark(r):
        return f" [{r['file']}]" if r["file"] > 1 else ""

    print("| method | " + " | ".join(f"{s} test (val)" for s in sparsities) + " |")
    print("|---|" + "---|" * len(sparsities))
    for label in labels:
        def cell(s):
            r = cells.get((label, "dense" if label == "dense" else s))
            return f"{r['ppl_test']:.2f} ({r['ppl_validation']:.2f}){mark(r)}" if r else "not measured"
        print(f"| {label} | " + " | ".join(cell(s) for s in sparsities) + " |")
    print("\n| Wanda++ 2:4 sweep point (others: paper defaults) | val ppl | test ppl | prune s (H100) |")
    print("|---|---|---|---|")
    for r in rows:
        if r["method"].startswith("wanda++") and r["sparsity"] == "2:4" and r["method"] != "wanda++-rgs":
            setting = ", ".join(f"{k}={v}" for k, v in r["hyper"].items()) or "paper defaults"
            setting += f" (preset {r['preset']})" if r.get("preset", "paper") != "paper" else ""
            setting += " (RO only: alpha=0)" if r["method"] == "wanda++-ro" else ""
            print(f"| {setting}{mark(r)} | {r['ppl_validation']:.2f} | {r['ppl_test']:.2f} | {r['prune_s']} |")
    for number, path in enumerate(paths[1:], 2):
        print(f"\n[{number}]: {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
