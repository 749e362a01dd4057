"""Markdown tables of Nsight Compute CSV reports of `benchmarks/kernels/profile_products.py`.

    python -m benchmarks.kernels.ncu_table benchmarks/results/h100_ncu/gateup_8192_v1.csv [--labels cublas,CUTLASS,...]
    python -m benchmarks.kernels.ncu_table benchmarks/results/h100_ncu/*_tuned.csv

A `--page details` report gives one row per profiled kernel with its duration, SM clock, and the throughputs
(% of peak) of the SMs, L1/TEX (shared memory included), L2 and DRAM, with the L2 hit rate. A `--page raw`
report of the shared-memory metrics (RAW_METRICS below; `--print-metrics` prints them for ncu) gives the elapsed
SM cycles, the tensor pipe's busy share, the shared-memory wavefronts (all, and those of `wgmma` operand reads),
the shared pipe's load and the `wgmma` bank conflicts. Rows are labelled by the products profile_products.py
printed, in launch order, unless --labels says otherwise; ncu's preamble lines are skipped.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

COLUMNS = {"Duration": "ms", "SM Frequency": "SM MHz", "Compute (SM) Throughput": "SM %",
           "L1/TEX Cache Throughput": "L1/TEX %", "L2 Cache Throughput": "L2 %", "DRAM Throughput": "DRAM %",
           "L2 Hit Rate": "L2 hit %"}
SMEM = "l1tex__data_pipe_lsu_wavefronts_mem_shared"
# The metrics a raw report is asked for (`--print-metrics` gives ncu's --metrics list); DRAM is recorded, not tabulated.
RAW_METRICS = {"seconds": "gpu__time_duration.sum", "hertz": "sm__cycles_elapsed.avg.per_second",
               "tensor": "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_elapsed",
               "wavefronts": f"{SMEM}.sum", "wgmma": f"{SMEM}_op_gmma.sum",
               "pipe": f"{SMEM}.sum.pct_of_peak_sustained_elapsed",
               "conflicts": "l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_gmma.sum",
               "dram": "dram__throughput.avg.pct_of_peak_sustained_elapsed"}
RAW_COLUMNS = {"ms": "ms", "mhz": "SM MHz", "kcycles": "k SM cycles", "tensor": "tensor pipe %",
               "wavefronts": "shared wavefronts (M)", "wgmma": "of them wgmma (M)", "pipe": "shared pipe %",
               "conflicts": "wgmma bank conflicts"}


def _split(path: Path) -> tuple[list[str], list[str]]:
    """(preamble lines, CSV lines) of a report."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('"ID"'))
    return lines[:start], lines[start:]


def product_labels(path: Path) -> list[str]:
    """The products profile_products.py printed ("name: rel_err ..."), in the order it launched them."""
    return [line.split(": rel_err")[0] for line in _split(path)[0] if ": rel_err" in line]


def kernels(path: Path) -> list[tuple[str, dict[str, float]]]:
    """(kernel name, {metric: value}) per profiled launch of a details report, in launch order."""
    found: dict[str, tuple[str, dict]] = {}
    for row in csv.DictReader(io.StringIO("\n".join(_split(path)[1]))):
        name, metrics = found.setdefault(row["ID"], (row["Kernel Name"], {}))
        if row["Metric Name"] in COLUMNS:
            metrics[row["Metric Name"]] = float(row["Metric Value"].replace(",", ""))
    return list(found.values())


def raw_kernels(path: Path) -> list[tuple[str, dict[str, float]]]:
    """(kernel name, RAW_COLUMNS values) per launch of a raw report (one row per kernel after a units row)."""
    rows = list(csv.DictReader(io.StringIO("\n".join(_split(path)[1]))))[1:]
    out = []
    for row in rows:
        value = lambda key: float(row[RAW_METRICS[key]].replace(",", ""))  # noqa: E731
        seconds, hertz = value("seconds") / 1e9, value("hertz")
        out.append((row["Kernel Name"], {
            "ms": seconds * 1e3, "mhz": hertz / 1e6, "kcycles": seconds * hertz / 1e3, "tensor": value("tensor"),
            "wavefronts": value("wavefronts") / 1e6, "wgmma": value("wgmma") / 1e6, "pipe": value("pipe"),
            "conflicts": value("conflicts")}))
    return out


def is_raw(path: Path) -> bool:
    return "gpu__time_duration.sum" in _split(path)[1][0]


def row(label: str, metrics: dict[str, float]) -> str:
    cells = [f"{metrics.get('Duration', float('nan')) / 1e6:.3f}",
             f"{metrics.get('SM Frequency', float('nan')) / 1e6:.0f}"]
    cells += [f"{metrics.get(name, float('nan')):.1f}" for name in list(COLUMNS)[2:]]
    return f"| {label} | " + " | ".join(cells) + " |"


def raw_row(label: str, metrics: dict[str, float]) -> str:
    formats = {"ms": ".3f", "mhz": ".0f", "kcycles": ".0f", "tensor": ".1f", "wavefronts": ".1f", "wgmma": ".3f",
               "pipe": ".1f", "conflicts": ".0f"}
    return f"| {label} | " + " | ".join(f"{metrics[key]:{fmt}}" for key, fmt in formats.items()) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="*", type=Path)
    parser.add_argument("--print-metrics", action="store_true", help="print the --metrics list a raw report needs")
    parser.add_argument("--labels", default="", help="comma-separated row labels, in launch order (default: the "
                        "products the report's preamble names, else the kernel names)")
    args = parser.parse_args()
    if args.print_metrics:
        print(",".join(RAW_METRICS.values()))
        return
    if not args.reports:
        parser.error("give the reports to tabulate")
    given = [label for label in args.labels.split(",") if label]
    header = None
    for report in args.reports:
        raw = is_raw(report)
        columns = RAW_COLUMNS if raw else COLUMNS
        if header != columns:  # a new table where the report kind changes
            header = columns
            print("\n| kernel | " + " | ".join(columns.values()) + " |")
            print("|---" * (len(columns) + 1) + "|")
        labels = given or product_labels(report)
        for i, (name, metrics) in enumerate(raw_kernels(report) if raw else kernels(report)):
            label = labels[i] if i < len(labels) else name[:60]
            print((raw_row if raw else row)(f"{report.stem}: {label}", metrics))


if __name__ == "__main__":
    main()
