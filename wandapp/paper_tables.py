"""The Wanda++ paper's tables from the report's results table, with the paper's published numbers beside ours.

Table 1: WikiText-2 perplexity per method x sparsity, with the change against Wanda in percent as the paper prints it;
Table 2: zero-shot accuracy (%) per task at 2:4; Table 3: LoRA recovery; Table 4: prune time and peak memory.
Each is written as CSV (long form: one row per cell, ours and the paper's side by side) and all four as Markdown in
paper_tables.md. The paper's numbers (wandapp/paper_results.json, transcribed from reference/method.md section 3)
appear wherever a model's name matches one of the paper's models. `figure_improvement` is the paper's Figure 1: 2:4
perplexity of dense, SparseGPT, Wanda and Wanda++ per model, each pruned bar labelled with its change against Wanda.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from importlib import resources
from pathlib import Path

import pandas as pd

DENSE = "dense"
# The paper's row order (Table 1), then methods it has no row for.
ROW_ORDER = [DENSE, "magnitude", "sparsegpt", "wanda", "gblm", "wanda++-ro", "wanda++-rgs", "wanda++"]
TASK_ORDER = ["wic", "mrpc", "hellaswag", "arc_easy", "arc_challenge", "winogrande", "boolq", "rte", "mmlu"]
FIGURE_METHODS = [DENSE, "sparsegpt", "wanda", "wanda++"]  # Figure 1's bars
PPL = "ppl_wikitext2"
TABLE_SPARSITY = "2:4"  # Tables 2 and 3 and Figure 1 are at 2:4


@lru_cache(maxsize=1)
def paper_results() -> dict:
    return json.loads(resources.files("wandapp").joinpath("paper_results.json").read_text())


def paper_model(name: str) -> str | None:
    """The paper's model key for one of our model names (its aliases: config names and hub ids), else None."""
    lowered = name.lower()
    for key, spec in paper_results()["models"].items():
        if lowered == key or lowered in spec["aliases"]:
            return key
    return None


def norm_sparsity(s: str) -> str:
    """"2:4" stays, "0.50" -> "0.5", dense "0" -> "0": the keys paper_results.json uses."""
    return s if ":" in s else f"{float(s):g}"


def pct_change(value, reference) -> float:
    if value is None or reference is None or pd.isna(value) or pd.isna(reference) or reference == 0:
        return math.nan
    return 100.0 * (value - reference) / reference


def _method_key(method: str) -> tuple:
    return (ROW_ORDER.index(method) if method in ROW_ORDER else len(ROW_ORDER), method)


def _sparsity_key(s: str) -> tuple:
    if ":" in s:
        n, m = map(int, s.split(":"))
        return (1, m, n)  # the paper's order: 50%, then 2:4, then 4:8
    return (0 if float(s) > 0 else -1, float(s), 0)


def _label_sparsity(s: str) -> str:
    if ":" in s:
        return s
    return "–" if float(s) == 0 else f"{float(s):g}"


# ---- tables (long form) ------------------------------------------------------------------------------------------


def _pruned(table: pd.DataFrame) -> pd.DataFrame:
    return table[~table.lora.astype(bool)].assign(sparsity=lambda t: t.sparsity.map(norm_sparsity))


def table1(table: pd.DataFrame) -> pd.DataFrame:
    """model, method, sparsity, ppl, vs_wanda_pct, paper_model, paper_ppl, paper_vs_wanda_pct."""
    cols = ["model", "method", "sparsity", "ppl", "vs_wanda_pct", "paper_model", "paper_ppl", "paper_vs_wanda_pct"]
    if PPL not in table:
        return pd.DataFrame(columns=cols)
    rows = []
    t = _pruned(table)
    for model, sub in t.groupby("model", sort=False):
        key = paper_model(model)
        paper = paper_results()["table1_ppl"].get(key, {}) if key else {}
        wanda = sub[sub.method == "wanda"].set_index("sparsity")[PPL]
        for r in sub.itertuples(index=False):
            ppl = getattr(r, PPL)
            if pd.isna(ppl):
                continue
            p = paper.get(r.method, {}).get(r.sparsity)
            p_wanda = paper.get("wanda", {}).get(r.sparsity)
            own = r.method not in (DENSE, "wanda")
            rows.append({
                "model": model, "method": r.method, "sparsity": r.sparsity, "ppl": ppl,
                "vs_wanda_pct": pct_change(ppl, wanda.get(r.sparsity)) if own else math.nan,
                "paper_model": key if p is not None else None, "paper_ppl": p,
                "paper_vs_wanda_pct": pct_change(p, p_wanda) if own and p is not None else math.nan,
            })
    out = pd.DataFrame(rows, columns=cols)
    return _sorted(out)


def table2(table: pd.DataFrame, sparsity: str = TABLE_SPARSITY) -> pd.DataFrame:
    """model, method, task, acc_pct, vs_wanda_pct, paper_model, paper_acc_pct, paper_vs_wanda_pct (at `sparsity`)."""
    cols = ["model", "method", "task", "acc_pct", "vs_wanda_pct", "paper_model", "paper_acc_pct", "paper_vs_wanda_pct"]
    t = _pruned(table)
    t = t[(t.method == DENSE) | (t.sparsity == sparsity)]
    tasks = [c.removeprefix("acc_") for c in t.columns if c.startswith("acc_") and c != "acc_mean"]
    tasks = sorted(tasks, key=lambda x: (TASK_ORDER.index(x) if x in TASK_ORDER else len(TASK_ORDER), x))
    rows = []
    for model, sub in t.groupby("model", sort=False):
        key = paper_model(model)
        paper = paper_results()["table2_zero_shot"].get(key) if key else None
        paper_acc = paper["acc_pct"] if paper and paper["sparsity"] == sparsity else {}
        wanda = sub[sub.method == "wanda"]
        for r in sub.to_dict("records"):
            for task in tasks:
                acc = r.get(f"acc_{task}")
                if acc is None or pd.isna(acc):
                    continue
                own = r["method"] not in (DENSE, "wanda")
                ref = wanda[f"acc_{task}"].iloc[0] * 100 if len(wanda) else math.nan
                p = paper_acc.get(r["method"], {}).get(task)
                p_ref = paper_acc.get("wanda", {}).get(task)
                rows.append({
                    "model": model, "method": r["method"], "task": task, "acc_pct": 100 * acc,
                    "vs_wanda_pct": pct_change(100 * acc, ref) if own else math.nan,
                    "paper_model": key if p is not None else None, "paper_acc_pct": p,
                    "paper_vs_wanda_pct": pct_change(p, p_ref) if own and p is not None else math.nan,
                })
    out = pd.DataFrame(rows, columns=cols)
    if out.empty:
        return out
    order = {t: i for i, t in enumerate(tasks)}
    key = out.apply(lambda r: (r.model, _method_key(r.method), order[r.task]), axis=1)
    return out.iloc[sorted(range(len(out)), key=lambda i: key.iloc[i])].reset_index(drop=True)


def table3_lora(table: pd.DataFrame) -> pd.DataFrame:
    """model, method, sparsity, dense_ppl, pruned_ppl, lora_ppl, lora_vs_pruned_pct and the paper's, per LoRA model."""
    cols = ["model", "method", "sparsity", "dense_ppl", "pruned_ppl", "lora_ppl", "lora_vs_pruned_pct",
            "paper_model", "paper_dense_ppl", "paper_pruned_ppl", "paper_lora_ppl", "paper_lora_vs_pruned_pct"]
    if PPL not in table:
        return pd.DataFrame(columns=cols)
    t = table.assign(sparsity=table.sparsity.map(norm_sparsity))
    rows = []
    for r in t[t.lora.astype(bool)].itertuples(index=False):
        same = t[(t.model == r.model) & (t.method == r.method) & (t.sparsity == r.sparsity) & ~t.lora.astype(bool)]
        dense = t[(t.model == r.model) & (t.method == DENSE)]
        pruned = same[PPL].iloc[0] if len(same) else math.nan
        lora_ppl = getattr(r, PPL)
        key = paper_model(r.model)
        paper = paper_results()["table3_lora"].get(key) if key else None
        p = paper.get(r.method) if paper and paper["sparsity"] == r.sparsity else None
        rows.append({
            "model": r.model, "method": r.method, "sparsity": r.sparsity,
            "dense_ppl": dense[PPL].iloc[0] if len(dense) else math.nan, "pruned_ppl": pruned, "lora_ppl": lora_ppl,
            "lora_vs_pruned_pct": pct_change(lora_ppl, pruned),
            "paper_model": key if p else None, "paper_dense_ppl": paper["dense"] if p else None,
            "paper_pruned_ppl": p["pruned"] if p else None, "paper_lora_ppl": p["lora"] if p else None,
            "paper_lora_vs_pruned_pct": pct_change(p["lora"], p["pruned"]) if p else math.nan,
        })
    return _sorted(pd.DataFrame(rows, columns=cols))


def table4_cost(table: pd.DataFrame) -> pd.DataFrame:
    """model, method, sparsity, prune_time_s, prune_peak_mem_gib, prune_mem_kind, paper_time_s, paper_mem_gb."""
    cols = ["model", "method", "sparsity", "prune_time_s", "prune_peak_mem_gib", "prune_mem_kind", "paper_model",
            "paper_time_s", "paper_mem_gb"]
    if "prune_time_s" not in table:
        return pd.DataFrame(columns=cols)
    t = _pruned(table)
    t = t[(t.method != DENSE) & t.prune_time_s.notna()]
    rows = []
    for r in t.to_dict("records"):
        key = paper_model(r["model"])
        paper = paper_results()["table4_prune_cost"].get(key, {}) if key else {}
        p = paper.get(r["method"]) or {}
        rows.append({**{c: r.get(c) for c in cols[:6]}, "paper_model": key if p else None,
                     "paper_time_s": p.get("time_s"), "paper_mem_gb": p.get("mem_gb")})
    return _sorted(pd.DataFrame(rows, columns=cols))


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return df
    key = df.apply(lambda r: (r.model, _sparsity_key(r.sparsity), _method_key(r.method)), axis=1)
    return df.iloc[sorted(range(len(df)), key=lambda i: key.iloc[i])].reset_index(drop=True)


# ---- Markdown ----------------------------------------------------------------------------------------------------


def _num(v, digits=2) -> str:
    return "" if v is None or pd.isna(v) else f"{v:.{digits}f}"


def _with_pct(v, pct, better_if_lower: bool, digits=2) -> str:
    """"9.43 (-18%)" as the paper prints it; bold where the change against Wanda is a >= 5% improvement."""
    if v is None or pd.isna(v):
        return ""
    if pct is None or pd.isna(pct):
        return _num(v, digits)
    text = f"{_num(v, digits)} ({pct:+.0f}%)"
    return f"**{text}**" if (-pct if better_if_lower else pct) >= 5 else text


def _md(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def _paper_label(key) -> str:
    return paper_results()["models"][key]["label"] if isinstance(key, str) else ""


def _first_key(keys) -> str | None:
    return next((k for k in keys if isinstance(k, str)), None)  # pandas keeps a missing one as NaN


def markdown_table1(t1: pd.DataFrame) -> str:
    parts = []
    for model, sub in t1.groupby("model", sort=False):
        key = _first_key(sub.paper_model)
        header = ["Method", "Sparsity", f"{model} (ours)"] + ([f"{_paper_label(key)} (paper)"] if key else [])
        rows = [[r.method, _label_sparsity(r.sparsity), _with_pct(r.ppl, r.vs_wanda_pct, True)]
                + ([_with_pct(r.paper_ppl, r.paper_vs_wanda_pct, True)] if key else [])
                for r in sub.itertuples(index=False)]
        parts.append(f"### {model}\n\n" + _md(header, rows))
    return "\n".join(parts) or "No WikiText-2 perplexity results.\n"


def markdown_table2(t2: pd.DataFrame) -> str:
    parts = []
    for model, sub in t2.groupby("model", sort=False):
        tasks = list(dict.fromkeys(sub.task))
        key = _first_key(sub.paper_model)
        rows = []
        for method, m in sub.groupby("method", sort=False):
            by_task = m.set_index("task")
            cells = [_with_pct(by_task.acc_pct.get(t), by_task.vs_wanda_pct.get(t), False) for t in tasks]
            rows.append([method] + cells + [_num(by_task.acc_pct.mean())])
            if key and by_task.paper_acc_pct.notna().any():
                cells = [_with_pct(by_task.paper_acc_pct.get(t), by_task.paper_vs_wanda_pct.get(t), False)
                         for t in tasks]
                rows.append([f"{method} (paper, {_paper_label(key)})"] + cells + [_num(by_task.paper_acc_pct.mean())])
        parts.append(f"### {model}\n\n" + _md(["Method"] + tasks + ["mean"], rows))
    return "\n".join(parts) or f"No zero-shot results at {TABLE_SPARSITY}.\n"


def markdown_table3(t3: pd.DataFrame) -> str:
    if t3.empty:
        return "No LoRA-tuned models.\n"
    rows = []
    for r in t3.itertuples(index=False):
        rows.append([r.model, r.method, r.sparsity, _num(r.dense_ppl), _num(r.pruned_ppl),
                     _with_pct(r.lora_ppl, r.lora_vs_pruned_pct, True)])
        if isinstance(r.paper_model, str):
            rows.append([f"{_paper_label(r.paper_model)} (paper)", r.method, r.sparsity, _num(r.paper_dense_ppl),
                         _num(r.paper_pruned_ppl), _with_pct(r.paper_lora_ppl, r.paper_lora_vs_pruned_pct, True)])
    return _md(["Model", "Method", "Sparsity", "Dense", "Pruned model", "After LoRA-tuned"], rows)


def markdown_table4(t4: pd.DataFrame) -> str:
    if t4.empty:
        return "No prune reports.\n"
    paper = t4.paper_model.notna().any()
    rows = [[r.model, r.method, _label_sparsity(r.sparsity), _num(r.prune_time_s, 1), _num(r.prune_peak_mem_gib),
             str(r.prune_mem_kind or "")]
            + ([_num(r.paper_time_s, 0), _num(r.paper_mem_gb, 0)] if paper else []) for r in t4.itertuples(index=False)]
    header = ["Model", "Method", "Sparsity", "Time (s)", "Peak memory (GiB)", "Memory of"]
    return _md(header + (["Paper time (s)", "Paper VRAM (GB)"] if paper else []), rows)


def paper_markdown(t1, t2, t3, t4) -> str:
    note = paper_results()["table4_prune_cost"]["llama-1-7b"]["note"]
    return "\n".join([
        "# The paper's tables, ours beside the paper's\n",
        "Generated by `wandapp report`. Percentages in parentheses are the change against Wanda at the same sparsity "
        "(LoRA: against the same method's pruned model), rounded; **bold** marks a >= 5% improvement, as the paper "
        "does. The paper's numbers (Wanda++, ACL 2025; `wandapp/paper_results.json`) appear where a model's name is "
        "one of the paper's; their percentages are recomputed from the printed values.\n",
        "## Table 1: WikiText-2 perplexity (lower is better)\n", markdown_table1(t1),
        f"## Table 2: zero-shot accuracy (%) at {TABLE_SPARSITY}\n", markdown_table2(t2),
        "## Table 3: WikiText-2 perplexity with LoRA\n", markdown_table3(t3),
        "## Table 4: pruning time and peak memory\n",
        f"Paper columns: {note}.\n", markdown_table4(t4),
    ])


# ---- Figure 1 ----------------------------------------------------------------------------------------------------


def improvement_groups(table: pd.DataFrame, sparsity: str = TABLE_SPARSITY) -> list[tuple[str, dict[str, float]]]:
    """[(panel title, {method: ppl})]: ours per model, then the paper's for each of our models that is the paper's."""
    if PPL not in table:
        return []
    t = _pruned(table)
    groups = []
    for model, sub in t.groupby("model", sort=False):
        values = {}
        for method in FIGURE_METHODS:
            rows = sub[(sub.method == method) & ((sub.sparsity == sparsity) | (method == DENSE))][PPL].dropna()
            if len(rows):
                values[method] = float(rows.iloc[0])
        if "wanda" in values and len(values) > 1:
            groups.append((f"{model} (ours)", values))
        key = paper_model(model)
        if key:
            paper = paper_results()["table1_ppl"].get(key, {})
            values = {m: paper[m]["0" if m == DENSE else sparsity] for m in FIGURE_METHODS
                      if (m == DENSE and "0" in paper.get(m, {})) or sparsity in paper.get(m, {})}
            if "wanda" in values:
                groups.append((f"{_paper_label(key)} (paper)", values))
    return groups


def figure_improvement(table: pd.DataFrame, colours: dict[str, str], sparsity: str = TABLE_SPARSITY):
    """Figure 1 of the paper: perplexity bars per model, the pruned ones labelled with their change against Wanda."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    groups = improvement_groups(table, sparsity)
    title = f"WikiText-2 perplexity at {sparsity} and the change against Wanda (lower is better)"
    fig = Figure(figsize=(max(3.2 * len(groups), 4.5), 3.4), layout="constrained")
    if not groups:
        ax = fig.subplots()
        ax.axis("off")
        ax.text(0.5, 0.5, f"No WikiText-2 results of Wanda at {sparsity}.", ha="center", va="center")
        fig.suptitle(title, fontsize=10)
        return fig
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, (name, values) in zip(axes, groups):
        methods = [m for m in FIGURE_METHODS if m in values]
        bars = ax.bar(range(len(methods)), [values[m] for m in methods],
                      color=[colours.get(m, "#444444") for m in methods], edgecolor="white")
        labels = [f"{pct_change(values[m], values['wanda']):+.0f}%" if m not in (DENSE, "wanda") else f"{values[m]:.3g}"
                  for m in methods]
        ax.bar_label(bars, labels=labels, fontsize=7, padding=2)
        ax.set_xticks(range(len(methods)), methods, fontsize=7)
        ax.set_ylim(0, max(values.values()) * 1.2)
        ax.set_ylabel("perplexity")
        ax.set_title(name, fontsize=9)
        ax.grid(axis="y", alpha=0.3, linewidth=0.5)
        ax.set_axisbelow(True)
    handles = [Patch(facecolor=colours.get(m, "#444444"), label=m) for m in FIGURE_METHODS]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    return fig


def write_paper_tables(table: pd.DataFrame, out: Path, write) -> list[Path]:
    """Write table{1..4}_*.csv and paper_tables.md into `out` through `write(path, fn(tmp))`; return the paths."""
    t1, t2, t3, t4 = table1(table), table2(table), table3_lora(table), table4_cost(table)
    written = []
    for name, df in (("table1_ppl", t1), ("table2_zero_shot", t2), ("table3_lora", t3), ("table4_prune_cost", t4)):
        path = out / f"{name}.csv"
        write(path, lambda tmp, df=df: df.to_csv(tmp, index=False, float_format="%.6g"))
        written.append(path)
    md = out / "paper_tables.md"
    write(md, lambda tmp: Path(tmp).write_text(paper_markdown(t1, t2, t3, t4)))
    return written + [md]
