"""Collect the workflow's metrics JSONs into one table, then write summary.csv, summary.md, the paper's tables
(paper_tables.md, table1..4_*.csv: paper_tables.py) and figures (PNG + SVG).

A metrics file's place says what it describes: `.../{model}/{method}/{variant}/{kind}.json`, where variant is the
sparsity's SparsityPattern.path_label ("2-4", "0.5"; "0" for dense), optionally followed by "+lora", and kind is one of
prune, lora, tasks, bench or ppl_<dataset>. Any stage may be missing; its columns and figures then say so.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Iterable

import pandas as pd

from .errors import WandappError
from .io import atomic_file, read_json
from .methods import METHODS
from .pattern import SparsityPattern
from .workflow import DENSE, LORA_SUFFIX, pattern_of

log = logging.getLogger(__name__)

# Fixed order (the methods' own) and colours (Okabe-Ito, colour-blind safe): a method looks the same in every figure.
METHOD_ORDER = list(METHODS)
PALETTE = ["#999999", "#56B4E9", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#0072B2", "#F0E442", "#000000"]
FIGURES = ["ppl", "ppl_relative", "accuracy", "speedup", "prune_cost", "improvement"]
GIB = 1024**3


# ---- collecting --------------------------------------------------------------------------------------------------


def parse_location(path: Path) -> tuple[str, str, str, bool, str]:
    """(model, method, sparsity, lora, kind) from `.../{model}/{method}/{variant}/{kind}.json`."""
    if len(path.parts) < 4 or path.suffix != ".json":
        raise WandappError(f"{path}: expected .../MODEL/METHOD/SPARSITY/KIND.json")
    model, method, variant = path.parts[-4:-1]
    lora = variant.endswith(LORA_SUFFIX)
    try:
        sparsity = pattern_of(variant).label
    except WandappError as e:
        raise WandappError(f"{path}: {e}") from None
    return model, method, sparsity, lora, path.stem


def find_metric_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The JSON files named, plus every *.json below the folders named."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.rglob("*.json"))
        elif p.is_file():
            files.append(p)
        else:
            raise WandappError(f"results not found: {p}")
    return files


def _task_scores(data: dict) -> dict[str, float]:
    """{task: acc} from a tasks.json, whether results sit under "tasks", "results" or at the top level."""
    results = data.get("tasks", data.get("results", data))
    scores = {}
    for task, entry in results.items():
        if isinstance(entry, dict):
            acc = entry.get("acc", entry.get("acc,none"))
            if isinstance(acc, (int, float)):
                scores[task] = float(acc)
    return scores


def _speedups(data: dict) -> dict[str, float]:
    """Speed-ups of a bench.json as written by `wandapp bench`: end-to-end prefill (longest prompt, batch 1; eager
    and with compiled blocks), decode (batch 1), the best linear shape and the fused MLP's products at 2048 tokens;
    plus any numeric top-level "*speedup*" key."""
    found = {k: float(v) for k, v in data.items()
             if "speedup" in k and isinstance(v, (int, float)) and not isinstance(v, bool)}
    e2e = data.get("end_to_end") or {}
    for phase, compiled in (("prefill", False), ("decode", False), ("prefill", True)):
        records = [r for r in e2e.get(f"{phase}_speedup", [])
                   if r.get("batch") == 1 and r.get("compiled", False) == compiled]
        if records:
            key = f"{'compiled_' if compiled else ''}{phase}_speedup"
            found[key] = float(max(records, key=lambda r: r.get("prompt_len", 0))["speedup"])
    mlp_2048 = [r["products_speedup"] for r in data.get("mlp", []) if r.get("tokens") == 2048]
    if mlp_2048:
        found["mlp_products_speedup_2048_tokens"] = float(mlp_2048[0])
    at_2048 = [r["speedup"] for r in data.get("linear", []) if r.get("tokens") == 2048]
    if at_2048:
        found["linear_best_speedup_2048_tokens"] = float(max(at_2048))
    return found


def _row_values(kind: str, data: dict) -> dict:
    if kind.startswith("ppl_"):
        return {f"ppl_{data.get('dataset', kind[4:])}": data["ppl"]}
    if kind == "tasks":
        scores = _task_scores(data)
        row = {f"acc_{t}": v for t, v in scores.items()}
        if scores:
            row["acc_mean"] = sum(scores.values()) / len(scores)
        return row
    if kind == "prune":
        gpu = data.get("peak_gpu_mem_bytes") or 0
        row = {
            "prune_time_s": data.get("wall_time_s"),
            "prune_peak_mem_gib": (gpu or data.get("peak_cpu_rss_bytes") or math.nan) / GIB,
            "prune_mem_kind": "GPU" if gpu else "CPU RSS",
            "sparsity_overall": data.get("sparsity_overall"),
        }
        return row
    if kind == "bench":
        if data.get("skipped"):
            return {"bench_skipped": str(data.get("reason", "skipped"))}
        return {f"bench_{k}": v for k, v in _speedups(data).items()}
    if kind == "lora":
        sparsity = data.get("sparsity") or {}
        return {"lora_time_s": data.get("wall_time_s"), "lora_ppl_before": data.get("ppl_before"),
                "lora_ppl_after": data.get("ppl_after"), "lora_sparsity_remasked": sparsity.get("remasked"),
                "lora_nonzero_pruned": (data.get("mask") or {}).get("pruned_weights_nonzero")}
    log.warning("ignoring unknown metrics file kind %r", kind)
    return {}


def collect(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One row per (model, method, sparsity, lora) with every metric found; relative perplexities added."""
    rows: dict[tuple, dict] = {}
    for path in find_metric_files(paths):
        model, method, sparsity, lora, kind = parse_location(path)
        try:
            data = read_json(path)
        except (OSError, ValueError) as e:
            raise WandappError(f"cannot read {path}: {e}") from e
        key = (model, method, sparsity, lora)
        rows.setdefault(key, dict(zip(["model", "method", "sparsity", "lora"], key))).update(_row_values(kind, data))
    if not rows:
        raise WandappError("no metrics files found")
    table = pd.DataFrame(list(rows.values()))
    for col in [c for c in table.columns if c.startswith("ppl_")]:
        dense = table[table.method == DENSE].set_index("model")[col]
        table[f"{col}_rel"] = table[col] / table.model.map(dense)
    return sort_rows(table[_column_order(table.columns)])


def _column_order(columns) -> list[str]:
    """Keys first, then perplexity (each next to its relative value), accuracy, pruning cost, speed, LoRA."""
    groups = ["model", "method", "sparsity", "lora"]
    ppl = sorted(c for c in columns if c.startswith("ppl_") and not c.endswith("_rel"))
    ordered = groups + [x for c in ppl for x in (c, f"{c}_rel")]
    ordered += ["acc_mean"] + sorted(c for c in columns if c.startswith("acc_") and c != "acc_mean")
    ordered += ["sparsity_overall", "prune_time_s", "prune_peak_mem_gib", "prune_mem_kind"]
    ordered += sorted(c for c in columns if c.startswith("bench_"))
    ordered += sorted(c for c in columns if c.startswith("lora_"))
    return [c for c in ordered if c in columns] + [c for c in columns if c not in ordered]


def series_label(method: str, lora: bool) -> str:
    return f"{method} + LoRA" if lora else method


def _sparsity_key(s: str) -> tuple:
    p = SparsityPattern.parse(s)
    return (0, p.n / p.m, p.m) if p.is_nm else (1, p.ratio, 0)


def sparsity_label(s: str) -> str:
    p = SparsityPattern.parse(s)
    return p.label if p.is_nm else f"{p.ratio:.0%}"


def _method_key(method: str) -> tuple:
    base = method
    return (METHOD_ORDER.index(base) if base in METHOD_ORDER else len(METHOD_ORDER), method)


def sort_rows(table: pd.DataFrame) -> pd.DataFrame:
    key = table.apply(
        lambda r: (r.model, r.method != DENSE, _sparsity_key(r.sparsity), _method_key(r.method), r.lora), axis=1
    )
    return table.iloc[sorted(range(len(table)), key=lambda i: key.iloc[i])].reset_index(drop=True)


# ---- tables ------------------------------------------------------------------------------------------------------


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return f"{v:.3g}" if abs(v) >= 1000 or abs(v) < 0.01 else f"{v:.2f}"
    return "" if v is None else str(v)


def markdown_table(table: pd.DataFrame) -> str:
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def summary_markdown(table: pd.DataFrame) -> str:
    parts = ["# Pruning summary\n",
             "Generated by `wandapp report`. Perplexity: lower is better; `_rel` = pruned / dense. "
             "Accuracy `acc_*`: fraction correct. Memory in GiB, time in seconds.\n"]
    notes = table.get("bench_skipped")
    if notes is not None and notes.notna().any():
        parts.append(f"Speed benchmark skipped: {notes.dropna().iloc[0]}\n")
        table = table.drop(columns="bench_skipped")
    for model, sub in table.groupby("model", sort=False):
        parts += [f"## {model}\n", markdown_table(sub.drop(columns="model").dropna(axis=1, how="all"))]
    return "\n".join(parts)


# ---- figures -----------------------------------------------------------------------------------------------------


def _new_figure(nrows: int, ncols: int, panel=(3.6, 2.8)):
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no display backend

    width = max(panel[0] * ncols, 4.2)  # a lone panel still fits a three-column legend
    fig = Figure(figsize=(width, panel[1] * nrows + 0.8), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _colours(series: list[tuple[str, bool]]) -> dict[str, str]:
    """A fixed colour per known method, whatever else is plotted; its LoRA variant shares it, hatched."""
    methods = list(dict.fromkeys(m for m, _ in series))
    others = [m for m in methods if m not in METHOD_ORDER]
    index = {m: METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER) + others.index(m) for m in methods}
    return {m: PALETTE[index[m] % len(PALETTE)] for m in methods}


def _series(table: pd.DataFrame) -> list[tuple[str, bool]]:
    pruned = table[table.method != DENSE]
    keys = {(m, bool(lo)) for m, lo in zip(pruned.method, pruned.lora)}
    return sorted(keys, key=lambda k: (_method_key(k[0]), k[1]))


def _grouped_bars(ax, sub: pd.DataFrame, value: str, series, colours, fmt="{:.3g}", log=False):
    """Bars of `value` per sparsity (x groups) and method (bars), labelled with their values."""
    sparsities = sorted(sub.sparsity.unique(), key=_sparsity_key)
    # Only the series with a value in this panel share its groups, so a lone bar sits on its tick.
    present = [(m, lo) for m, lo in series if value in sub and
               sub[(sub.method == m) & (sub.lora == lo)][value].notna().any()]
    width = 0.8 / max(len(present), 1)
    for i, (method, lora) in enumerate(present):
        rows = sub[(sub.method == method) & (sub.lora == lora)].set_index("sparsity")
        xs, ys = [], []
        for j, s in enumerate(sparsities):
            v = rows[value].get(s) if value in rows else None
            if v is not None and not pd.isna(v):
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(v)
        label = series_label(method, lora)
        bars = ax.bar(xs, ys, width, color=colours[method], label=label, hatch="//" if lora else None,
                      edgecolor="white", linewidth=0.5)
        if len(series) * len(sparsities) <= 24:
            ax.bar_label(bars, labels=[fmt(y) if callable(fmt) else fmt.format(y) for y in ys], fontsize=6,
                         rotation=90, padding=2)
    ax.set_xticks(range(len(sparsities)), [sparsity_label(s) for s in sparsities])
    ax.set_xlabel("sparsity")
    if log:
        ax.set_yscale("log")
    ax.grid(axis="y", alpha=0.3, linewidth=0.5)
    ax.set_axisbelow(True)


def _dense_line(ax, value: float, text: str):
    """Dashed reference line, labelled with its value just outside the right end (clear of the bar labels)."""
    ax.axhline(value, color="black", linestyle="--", linewidth=1)
    ax.annotate(text.replace(" ", "\n", 1), (1, value), xycoords=("axes fraction", "data"), xytext=(3, 0),
                textcoords="offset points", ha="left", va="center", fontsize=6.5, annotation_clip=False)


def _fit_limits(ax, log: bool, floor: float | None = None):
    """Y range that shows every bar, the reference line and the rotated value labels above the bars."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.relim()
    values = [y for line in ax.get_lines() for y in line.get_ydata()]
    values += [p.get_height() for p in ax.patches if p.get_height() > 0]
    if not values:
        return
    lo, hi = min(values), max(values)
    if log:
        ax.set_ylim(lo / 1.5, hi * (hi / lo) ** 0.35 * 1.5)
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.set_ylim(floor if floor is not None else 0, hi * 1.3)


def _finish(fig, axes, series, colours, title: str, extra_handles=()):
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=colour, label=method) for method, colour in colours.items()]
    if any(lora for _, lora in series):
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="//", label="+ LoRA"))
    handles += list(extra_handles)
    ncol = min(len(handles), 3 * axes.shape[1])
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)


def _placeholder(title: str, message: str):
    fig, axes = _new_figure(1, 1, panel=(5.0, 1.0))
    ax = axes[0, 0]
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=9, transform=ax.transAxes)
    fig.suptitle(title, fontsize=10)
    return fig


def _dense_handle():
    from matplotlib.lines import Line2D

    return Line2D([], [], color="black", linestyle="--", linewidth=1, label="dense")


def _ppl_label(v: float) -> str:
    return f"{v:.0f}" if v >= 100 else f"{v:.3g}"


def figure_ppl(table: pd.DataFrame, relative: bool):
    cols = [c for c in table.columns if c.startswith("ppl_") and not c.endswith("_rel")]
    title = "Perplexity relative to dense" if relative else "Perplexity"
    pruned = table[table.method != DENSE]
    if not cols or pruned.empty:
        return _placeholder(title, "No perplexity results of pruned models.")
    models = list(dict.fromkeys(table.model))
    series = _series(table)
    colours = _colours(series)
    fig, axes = _new_figure(len(cols), len(models))
    for r, col in enumerate(cols):
        dataset = col.removeprefix("ppl_")
        for c, model in enumerate(models):
            ax, sub = axes[r, c], table[table.model == model]
            value = f"{col}_rel" if relative else col
            _grouped_bars(ax, sub[sub.method != DENSE], value, series, colours, log=True,
                          fmt="{:.2f}x" if relative else _ppl_label)
            dense = sub[sub.method == DENSE][col].dropna()
            if relative:
                _dense_line(ax, 1.0, "dense = 1")
                ax.set_ylabel(f"{dataset} perplexity / dense")
            else:
                if not dense.empty:
                    _dense_line(ax, dense.iloc[0], f"dense {dense.iloc[0]:.3g}")
                ax.set_ylabel(f"{dataset} perplexity")
            _fit_limits(ax, log=True)
            ax.set_title(model, fontsize=9)
    _finish(fig, axes, series, colours, title + " (lower is better)", [_dense_handle()])
    return fig


def figure_accuracy(table: pd.DataFrame):
    title = "Mean zero-shot accuracy"
    if "acc_mean" not in table or table[table.method != DENSE].acc_mean.isna().all():
        return _placeholder(title, "No downstream-task results (tasks disabled or not run).")
    tasks = sorted(c.removeprefix("acc_") for c in table.columns if c.startswith("acc_") and c != "acc_mean")
    table = table.assign(acc_mean_pct=table.acc_mean * 100)
    models = list(dict.fromkeys(table.model))
    series = _series(table)
    colours = _colours(series)
    fig, axes = _new_figure(1, len(models))
    for c, model in enumerate(models):
        ax, sub = axes[0, c], table[table.model == model]
        _grouped_bars(ax, sub[sub.method != DENSE], "acc_mean_pct", series, colours, fmt="{:.1f}")
        dense = sub[sub.method == DENSE].acc_mean_pct.dropna()
        if not dense.empty:
            _dense_line(ax, dense.iloc[0], f"dense {dense.iloc[0]:.1f}")
        ax.set_ylabel("mean accuracy (%)")
        _fit_limits(ax, log=False)
        ax.set_title(model, fontsize=9)
    _finish(fig, axes, series, colours, f"{title} over {len(tasks)} tasks\n({', '.join(tasks)})", [_dense_handle()])
    return fig


def figure_speedup(table: pd.DataFrame):
    title = "Speed-up over dense"
    cols = [c for c in table.columns if c.startswith("bench_") and c != "bench_skipped"]
    if not cols:
        reasons = table.get("bench_skipped")
        reason = reasons.dropna().iloc[0] if reasons is not None and reasons.notna().any() else "no results"
        return _placeholder(title, f"Speed benchmark not measured:\n{reason}")
    preferred = ["bench_prefill_speedup", "bench_compiled_prefill_speedup", "bench_decode_speedup",
                 "bench_mlp_products_speedup_2048_tokens", "bench_linear_best_speedup_2048_tokens"]
    shown = [c for c in preferred if c in cols] or cols[:1]
    models = list(dict.fromkeys(table.model))
    series = _series(table[table[shown].notna().any(axis=1)])
    colours = _colours(series)
    fig, axes = _new_figure(len(models), len(shown))  # one row per model, one panel per speed-up kind
    for c, col in enumerate(shown):
        for r, model in enumerate(models):
            ax, sub = axes[r, c], table[(table.model == model) & table[col].notna()]
            _grouped_bars(ax, sub, col, series, colours, fmt="{:.2f}x")
            _dense_line(ax, 1.0, "dense = 1")
            _fit_limits(ax, log=False)
            ax.set_ylabel(col.removeprefix("bench_").replace("_", " ") + " (x)")
            ax.set_title(model, fontsize=9)
    _finish(fig, axes, series, colours, title + " (higher is better)", [_dense_handle()])
    return fig


def figure_prune_cost(table: pd.DataFrame):
    title = "Pruning cost"
    pruned = table[(table.method != DENSE) & ~table.lora]
    if "prune_time_s" not in pruned or pruned.prune_time_s.isna().all():
        return _placeholder(title, "No prune reports found.")
    models = list(dict.fromkeys(pruned.model))
    series = _series(pruned)
    colours = _colours(series)
    fig, axes = _new_figure(len(models), 2)
    for r, model in enumerate(models):
        sub = pruned[pruned.model == model]
        _grouped_bars(axes[r, 0], sub, "prune_time_s", series, colours, fmt="{:.0f}")
        axes[r, 0].set_ylabel("wall time (s)")
        _grouped_bars(axes[r, 1], sub, "prune_peak_mem_gib", series, colours, fmt="{:.2f}")
        kinds = ", ".join(sorted(set(sub.prune_mem_kind.dropna())))
        axes[r, 1].set_ylabel(f"peak memory (GiB, {kinds})")
        for ax in axes[r]:
            _fit_limits(ax, log=False)
            ax.set_title(model, fontsize=9)
    _finish(fig, axes, series, colours, title + " (lower is better)")
    return fig


def figure_improvement(table: pd.DataFrame):
    """The paper's Figure 1 (paper_tables.py), in this report's colours; dense in black."""
    from .paper_tables import FIGURE_METHODS
    from .paper_tables import figure_improvement as draw

    pruned = [(m, False) for m in FIGURE_METHODS if m != DENSE]
    return draw(table, {**_colours(pruned), DENSE: "#000000"})


def _atomic_write(path: Path, write) -> None:
    """Call write(tmp) on a temporary sibling that is renamed over `path`: a reader never sees half a file."""
    with atomic_file(path) as tmp:
        write(tmp)


def _save(fig, path: Path) -> None:
    _atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=200, format=path.suffix[1:], bbox_inches="tight"))


def write_report(table: pd.DataFrame, output: str | os.PathLike) -> list[Path]:
    """Write summary.csv, summary.md and every figure as PNG and SVG; return the paths written."""
    import matplotlib

    matplotlib.rcParams.update({"font.size": 8, "axes.titlesize": 9, "svg.fonttype": "none", "hatch.linewidth": 0.6})
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    makers = {
        "ppl": lambda: figure_ppl(table, relative=False),
        "ppl_relative": lambda: figure_ppl(table, relative=True),
        "accuracy": lambda: figure_accuracy(table),
        "speedup": lambda: figure_speedup(table),
        "prune_cost": lambda: figure_prune_cost(table),
        "improvement": lambda: figure_improvement(table),
    }
    for name in FIGURES:
        fig = makers[name]()
        for ext in ("png", "svg"):
            _save(fig, out / f"{name}.{ext}")
            written.append(out / f"{name}.{ext}")
    csv, md = out / "summary.csv", out / "summary.md"
    _atomic_write(csv, lambda tmp: table.to_csv(tmp, index=False, float_format="%.6g"))
    _atomic_write(md, lambda tmp: Path(tmp).write_text(summary_markdown(table)))
    from .paper_tables import write_paper_tables

    return written + [csv, md] + write_paper_tables(table, out, _atomic_write)
