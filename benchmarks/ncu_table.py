"""A Markdown table of the Speed Of Light figures in Nsight Compute CSV reports (`ncu --csv --page details`).

    python benchmarks/ncu_table.py benchmarks/results/h100_ncu/*.csv [--labels cublas,CUTLASS,...]

One row per profiled kernel: duration, SM clock, and the throughputs (% of peak) of the SMs, L1/TEX (shared
memory included), L2 and DRAM, with the L2 hit rate. ncu's preamble lines before the header are skipped.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

COLUMNS = {"Duration": "ms", "SM Frequency": "SM MHz", "Compute (SM) Throughput": "SM %",
           "L1/TEX Cache Throughput": "L1/TEX %", "L2 Cache Throughput": "L2 %", "DRAM Throughput": "DRAM %",
           "L2 Hit Rate": "L2 hit %"}


def kernels(path: Path) -> list[tuple[str, dict[str, float]]]:
    """(kernel name, {metric: value}) per profiled launch, in launch order."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('"ID"'))
    found: dict[str, tuple[str, dict]] = {}
    for row in csv.DictReader(io.StringIO("\n".join(lines[start:]))):
        name, metrics = found.setdefault(row["ID"], (row["Kernel Name"], {}))
        if row["Metric Name"] in COLUMNS:
            metrics[row["Metric Name"]] = float(row["Metric Value"].replace(",", ""))
    return list(found.values())


def row(label: str, metrics: dict[str, float]) -> str:
    cells = [f"{metrics.get('Duration', float('nan')) / 1e6:.3f}", f"{metrics.get('SM Frequency', float('nan')) / 1e6:.0f}"]
    cells += [f"{metrics.get(name, float('nan')):.1f}" for name in list(COLUMNS)[2:]]
    return f"| {label} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path)
    parser.add_argument("--labels", default="", help="comma-separated row labels, in launch order (default: names)")
    args = parser.parse_args()
    labels = [label for label in args.labels.split(",") if label]
    print("| kernel | " + " | ".join(COLUMNS.values()) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for report in args.reports:
        for i, (name, metrics) in enumerate(kernels(report)):
            label = labels[i] if i < len(labels) else name[:60]
            print(row(f"{report.stem}: {label}", metrics))


if __name__ == "__main__":
    main()
