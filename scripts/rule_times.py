#!/usr/bin/env python3
"""Per-rule timing table of a workflow run, from the `benchmark:` files every rule writes.

    python scripts/rule_times.py [RESULTS_DIR]          (default: results)

RESULTS_DIR/benchmarks/<rule>/.../*.tsv: Snakemake's columns (s, max_rss in MB, cpu_time, ...). The span is from
the first job's start (its file's time minus its seconds) to the last job's end. Standard library only.
"""

from __future__ import annotations

import csv
import os
import re
import sys
from collections import defaultdict
from pathlib import Path

# A warm-started job (config warm_start, wandapp/warm.py) runs in a child of the warm server, outside the process
# tree that Snakemake measures; its log's last lines carry the child's own figures, which replace the client's.
WARM_USAGE = re.compile(r"^wandapp warm: job cpu ([0-9.]+) s, max rss ([0-9]+) MB", re.M)


def read(results: Path) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = defaultdict(list)
    root = results / "benchmarks"
    for path in sorted(root.rglob("*.tsv")):
        rule = path.relative_to(root).parts[0].removesuffix(".tsv")
        usage = warm_usage(results / "logs" / path.relative_to(root).with_suffix(".log"))
        with open(path, newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                row["_end"] = os.path.getmtime(path)
                if usage:
                    row["cpu_time"], row["max_rss"] = usage
                rows[rule].append(row)
    return rows


def warm_usage(log: Path) -> tuple[str, str] | None:
    try:
        found = WARM_USAGE.findall(log.read_text(errors="replace")[-4000:])
    except OSError:
        return None
    return found[-1] if found else None


def number(row: dict, key: str) -> float:
    try:
        return float(row.get(key) or 0)
    except ValueError:  # "NA" where a platform does not report it
        return 0.0


def table(rows: dict[str, list[dict]]) -> str:
    lines = ["| rule | jobs | total s | mean s | max s | cpu s (sum) | max RSS MB |", "|---|---|---|---|---|---|---|"]
    total = cpu_total = jobs = 0.0
    starts, ends = [], []
    for rule, items in sorted(rows.items(), key=lambda kv: -sum(number(r, "s") for r in kv[1])):
        secs = [number(r, "s") for r in items]
        cpu = sum(number(r, "cpu_time") for r in items)
        rss = max(number(r, "max_rss") for r in items)
        lines.append(f"| {rule} | {len(items)} | {sum(secs):.1f} | {sum(secs) / len(secs):.1f} | {max(secs):.1f} | "
                     f"{cpu:.1f} | {rss:.0f} |")
        total, cpu_total, jobs = total + sum(secs), cpu_total + cpu, jobs + len(items)
        starts += [r["_end"] - number(r, "s") for r in items]
        ends += [r["_end"] for r in items]
    lines.append(f"| all | {int(jobs)} | {total:.1f} | | | {cpu_total:.1f} | |")
    if starts:
        span = max(ends) - min(starts)
        lines.append(f"\nspan from the first job's start to the last job's end: {span:.0f} s ({span / 60:.1f} min)")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    results = Path(argv[1] if len(argv) > 1 else "results")
    rows = read(results)
    if not rows:
        print(f"no benchmark files under {results / 'benchmarks'}", file=sys.stderr)
        return 2
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
