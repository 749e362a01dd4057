"""The paper's Tables 1-4 and Figure 1 from synthetic results, with the paper's numbers beside ours."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from test_report import synthetic_results

from wandapp.paper_tables import (
    figure_improvement,
    paper_model,
    paper_results,
    table1,
    table2,
    table3_lora,
    table4_cost,
)
from wandapp.report import collect, write_report


@pytest.fixture()
def results(tmp_path):
    # llama-7b is one of the paper's models (LLaMA-1 7B); tiny-b is not.
    synthetic_results(tmp_path / "metrics", models=("llama-7b", "tiny-b"), lora=True)
    return collect([tmp_path / "metrics"])


def test_paper_results_ship_with_the_package():
    data = paper_results()
    assert data["table1_ppl"]["llama-1-7b"]["wanda++"]["2:4"] == 9.43
    assert data["table1_ppl"]["open-llama-3b"]["wanda"]["2:4"] == 28.04
    assert data["table2_zero_shot"]["llama-1-7b"]["acc_pct"]["wanda++"]["mmlu"] == 27.52
    assert set(data["table2_zero_shot"]["llama-1-7b"]["acc_pct"]["dense"]) == {
        "wic", "mrpc", "hellaswag", "arc_easy", "arc_challenge", "winogrande", "boolq", "rte", "mmlu"}
    assert data["table3_lora"]["llama-1-7b"]["wanda"] == {"pruned": 11.59, "lora": 8.23}
    assert "gblm" not in data["table1_ppl"]["llama-1-65b"]  # "-" in the paper stays missing, not zero
    assert paper_model("huggyllama/llama-7b") == paper_model("LLaMA-7B") == "llama-1-7b"
    assert paper_model("smollm2") is None


def test_table1_change_against_wanda(results):
    t1 = table1(results).set_index(["model", "method", "sparsity"])
    # synthetic: llama-7b dense 10; wanda 2:4 3.3x, wanda++ 1.7x dense
    row = t1.loc[("llama-7b", "wanda++", "2:4")]
    assert row.ppl == pytest.approx(17.0) and row.vs_wanda_pct == pytest.approx(100 * (17 - 33) / 33)
    assert row.paper_ppl == 9.43 and row.paper_vs_wanda_pct == pytest.approx(100 * (9.43 - 11.53) / 11.53)
    assert math.isnan(t1.loc[("llama-7b", "wanda", "2:4")].vs_wanda_pct)  # the reference row itself
    assert t1.loc[("llama-7b", "dense", "0")].paper_ppl == 5.68
    assert math.isnan(t1.loc[("llama-7b", "magnitude", "2:4")].paper_ppl)  # no magnitude row in the paper
    assert pd.isna(t1.loc[("tiny-b", "wanda++", "0.5")].paper_ppl)
    # the paper's order: dense, then 50%, 2:4; within one, SparseGPT, Wanda, ..., Wanda++ last
    llama = table1(results).query("model == 'llama-7b'")
    assert list(llama.method[:3]) == ["dense", "magnitude", "sparsegpt"] and llama.method.iloc[-1] == "wanda++"
    assert list(dict.fromkeys(llama.sparsity)) == ["0", "0.5", "2:4"]


def test_table2_accuracy_at_2_4(results):
    t2 = table2(results)
    assert set(t2.task) == {"boolq", "rte"} and (t2.method == "magnitude").any()
    row = t2[(t2.model == "llama-7b") & (t2.method == "wanda++") & (t2.task == "rte")].iloc[0]
    wanda = t2[(t2.model == "llama-7b") & (t2.method == "wanda") & (t2.task == "rte")].iloc[0]
    assert row.acc_pct == pytest.approx(100 * 0.55 / 1.7)
    assert row.vs_wanda_pct == pytest.approx(100 * (row.acc_pct - wanda.acc_pct) / wanda.acc_pct)
    assert row.paper_acc_pct == 62.09 and row.paper_vs_wanda_pct == pytest.approx(100 * (62.09 - 49.82) / 49.82)
    assert t2[t2.model == "tiny-b"].paper_acc_pct.isna().all()
    assert len(t2[(t2.model == "llama-7b") & (t2.method == "dense")]) == 2  # dense counts as every sparsity


def test_table3_lora_and_table4_cost(results):
    t3 = table3_lora(results)
    row = t3[(t3.model == "llama-7b") & (t3.method == "wanda") & (t3.sparsity == "2:4")].iloc[0]
    assert (row.dense_ppl, row.pruned_ppl) == (pytest.approx(10.0), pytest.approx(33.0))
    assert row.lora_ppl == pytest.approx(33.0 * 0.9) and row.lora_vs_pruned_pct == pytest.approx(-10.0)
    assert (row.paper_pruned_ppl, row.paper_lora_ppl) == (11.59, 8.23)
    assert t3[(t3.sparsity == "0.5")].paper_lora_ppl.isna().all()  # the paper's LoRA table is 2:4 only
    t4 = table4_cost(results)
    assert len(t4) == 2 * 6 * 2  # models x methods x sparsities
    w = t4[(t4.model == "llama-7b") & (t4.method == "wanda++") & (t4.sparsity == "2:4")].iloc[0]
    assert (w.paper_time_s, w.paper_mem_gb, w.prune_mem_kind) == (290, 25, "CPU RSS")


def test_markdown_and_csv_files(results, tmp_path):
    out = tmp_path / "reports"
    written = write_report(results, out)
    for name in ("paper_tables.md", "table1_ppl.csv", "table2_zero_shot.csv", "table3_lora.csv",
                 "table4_prune_cost.csv", "improvement.png", "improvement.svg"):
        assert out / name in written
    md = (out / "paper_tables.md").read_text()
    assert "| Method | Sparsity | llama-7b (ours) | LLaMA-1 7B (paper) |" in md
    assert "| wanda++ | 2:4 | **17.00 (-48%)** | **9.43 (-18%)** |" in md  # >= 5% better than Wanda: bold
    assert "| magnitude | 2:4 | 37.00 (+12%) |  |" in md  # worse than Wanda: plain, and no paper number
    assert "| wanda++ (paper, LLaMA-1 7B) |" in md
    assert "| LLaMA-1 7B (paper) | wanda | 2:4 | 5.68 | 11.59 | **8.23 (-29%)** |" in md
    csv = pd.read_csv(out / "table1_ppl.csv")
    assert list(csv.columns[:5]) == ["model", "method", "sparsity", "ppl", "vs_wanda_pct"]
    assert csv[(csv.model == "llama-7b") & (csv.method == "wanda++") & (csv.sparsity == "2:4")].paper_ppl.item() == 9.43


def test_figure_1_panels_bars_and_labels(results):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = figure_improvement(results, {"sparsegpt": "#E69F00", "wanda": "#56B4E9", "wanda++": "#D55E00"})
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["llama-7b (ours)", "LLaMA-1 7B (paper)", "tiny-b (ours)"]
    for ax in axes:
        assert len(ax.patches) == 4  # dense, SparseGPT, Wanda, Wanda++
        assert [t.get_text() for t in ax.get_xticklabels()] == ["dense", "sparsegpt", "wanda", "wanda++"]
        assert ax.get_ylabel() == "perplexity"
    labels = [t.get_text() for t in axes[0].texts]
    assert labels == ["10", "-12%", "33", "-48%"]
    assert [t.get_text() for t in axes[1].texts][-1] == "-18%" and axes[1].patches[3].get_height() == 9.43
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    pixels = np.asarray(canvas.buffer_rgba())[..., :3]
    assert pixels.std() > 10 and (pixels < 100).mean() > 0.01  # drawn, not blank


def test_figure_1_without_wanda_at_2_4_says_so():
    table = pd.DataFrame(dict(model=["m", "m"], method=["dense", "wanda"], lora=[False, False],
                              sparsity=["0", "0.5"], ppl_wikitext2=[10.0, 20.0]))
    fig = figure_improvement(table, {})
    assert len(fig.axes) == 1 and "No WikiText-2 results of Wanda at 2:4" in fig.axes[0].texts[0].get_text()
