"""`wandapp report`: tables and figures from the workflow's metrics JSONs."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="collect metrics JSONs into summary.csv/.md and figures (PNG + SVG)",
        description="Read metrics files laid out as .../MODEL/METHOD/SPARSITY/KIND.json (KIND: prune, lora, tasks, "
        "bench, ppl_<dataset>) and write summary.csv, summary.md, the figures ppl, ppl_relative, accuracy, "
        "speedup, prune_cost and improvement (the paper's Figure 1) as PNG and SVG, and the paper's Tables 1-4 "
        "(paper_tables.md, table1_ppl.csv, table2_zero_shot.csv, table3_lora.csv, table4_prune_cost.csv) with "
        "the paper's published numbers beside ours for the paper's models. Missing stages give a figure that says so.",
    )
    p.add_argument("--results", nargs="+", required=True, help="metrics JSON files, or folders searched for *.json")
    p.add_argument("--output", required=True, help="folder for the tables and figures")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..errors import WandappError
    from ..io import check_output
    from ..report import collect, write_report

    # The folder gets fixed file names (summary.*, figures); other files in it are left alone.
    check_output(args.output, folder=True, overwrite=True)
    if Path(args.output).exists() and not Path(args.output).is_dir():
        raise WandappError(f"--output {args.output} is a file; name a folder")
    table = collect(args.results)
    for path in write_report(table, args.output):
        print(path)
