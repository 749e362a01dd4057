"""The old-vs-new table of prune_time_compare.sh: seconds, speed-up and peak GPU memory per run, and how far
block 0's masks and weights agree between the two codes.

    python -m benchmarks.pruning.prune_time_table ROWS.jsonl --masks DIR [--markdown table.md]

A run timed on fewer blocks than the model has (--limit) is extrapolated per block to all of them, and marked.
"""

from __future__ import annotations

import argparse
import glob
import json
import os

import numpy as np
import torch


def seconds_for_all(row: dict) -> tuple[float, bool]:
    if row["blocks_pruned"] < row["layers"]:
        return row["per_block_s"] * row["layers"], True
    return row["prune_s"], False


def time_table(rows: list[dict], old: str = "old", new: str = "new") -> list[str]:
    by = {(r.get("tag"), r["run"]): r for r in rows}
    runs = list(dict.fromkeys(r["run"] for r in rows))
    lines = [f"| run | {old} s | {new} s | speed-up | {old} peak GiB | {new} peak GiB |", "|---|---|---|---|---|---|"]
    for run in runs:
        a, b = by.get((old, run)), by.get((new, run))
        cells, secs = [], []
        for r in (a, b):
            if r is None:
                cells.append("-")
                secs.append(0.0)
                continue
            s, estimated = seconds_for_all(r)
            note = f" (est. from {r['blocks_pruned']} of {r['layers']} blocks)" if estimated else ""
            cells.append(f"{s:.1f}{note}")
            secs.append(s)
        ratio = f"{secs[0] / secs[1]:.2f}x" if a and secs[1] > 0 else "-"  # a tiny run may round to 0.0 s
        peaks = [f"{r['peak_gpu_gb']}" if r and r.get("peak_gpu_gb") is not None else "-" for r in (a, b)]
        lines.append(f"| {run} | {cells[0]} | {cells[1]} | {ratio} | {peaks[0]} | {peaks[1]} |")
    return lines


def mask_table(folder: str, old: str = "old", new: str = "new") -> list[str]:
    lines = ["| run (block 0, after the runs before it) | mask bits equal | masks identical "
             "| max abs weight diff (first rows) |",
             "|---|---|---|---|"]
    for path in sorted(glob.glob(os.path.join(folder, f"{old}-*.pt"))):
        other = path.replace(f"{old}-", f"{new}-")
        if not os.path.exists(other):
            continue
        a, b = torch.load(path, weights_only=True), torch.load(other, weights_only=True)
        if a["run"] != b["run"]:
            continue
        equal = total = 0
        for name, bits in a["masks"].items():
            x, y = bits.numpy(), b["masks"][name].numpy()
            equal += x.size * 8 - int(np.unpackbits(x ^ y).sum(dtype=np.int64))
            total += x.size * 8
        wdiff = max(float((a["rows"][n] - b["rows"][n]).abs().max()) for n in a["rows"])
        lines.append(f"| {a['run']} | {equal / total:.6f} | {'yes' if equal == total else 'no'} | {wdiff:.3g} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rows")
    ap.add_argument("--masks", default=None)
    ap.add_argument("--markdown", default=None)
    ap.add_argument("--tags", nargs=2, default=("old", "new"), metavar=("A", "B"),
                    help="the two row tags compared (default: old new)")
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(args.rows) if line.strip()]
    gpu = next((r["gpu"] for r in rows), "?")
    first = rows[0] if rows else {}
    lines = [f"Prune time, {gpu}, {first.get('layers', '?')} blocks, {first.get('nsamples', '?')} x "
             f"{first.get('seqlen', '?')} calibration, {first.get('sparsity', '?')}", ""]
    lines += time_table(rows, *args.tags)
    if args.masks:
        lines += ["", *mask_table(args.masks, *args.tags)]
    text = "\n".join(lines)
    print(text, flush=True)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
