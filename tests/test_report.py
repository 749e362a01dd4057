"""`wandapp report` on synthetic metrics: every table and figure is written, missing stages included."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from wandapp.report import FIGURES, collect, parse_location, write_report

METHODS = ["magnitude", "wanda", "sparsegpt", "wanda++-rgs", "wanda++-ro", "wanda++"]


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def synthetic_results(root, models=("tiny-a", "tiny-b"), tasks=True, bench="skipped", lora=False):
    """A metrics tree shaped like the workflow's, with plausible numbers."""
    for mi, model in enumerate(models):
        dense_ppl = 10.0 + 5 * mi
        variants = [("dense", "0", 1.0)]
        variants += [(m, s, 1.2 + 0.4 * (5 - i) + (0.5 if s == "2-4" else 0)) for i, m in enumerate(METHODS)
                     for s in ("2-4", "0.5")]
        for method, variant, factor in variants:
            names = [variant] + ([variant + "+lora"] if lora and method != "dense" else [])
            for name in names:
                d = root / model / method / name
                f = factor * (0.9 if name.endswith("+lora") else 1)
                _write(d / "ppl_wikitext2.json", {"ppl": dense_ppl * f, "dataset": "wikitext2", "split": "test"})
                if tasks:
                    _write(d / "tasks.json", {"tasks": {"boolq": {"acc": 0.6 / f, "acc_norm": 0.6, "n": 20},
                                                          "rte": {"acc": 0.55 / f, "n": 20}}})
                if method == "dense":
                    continue
                if name.endswith("+lora"):
                    _write(d / "lora.json", {"wall_time_s": 30.0})
                    continue
                _write(d / "prune.json", {"method": method, "sparsity": 0.5, "wall_time_s": 10.0 + 20 * factor,
                                          "peak_gpu_mem_bytes": 0, "peak_cpu_rss_bytes": 2.5 * 1024**3,
                                          "sparsity_overall": 0.5})
                if variant == "2-4" and bench == "skipped":
                    _write(d / "bench.json", {"skipped": True, "reason": "no CUDA device"})
                elif variant == "2-4" and bench:
                    _write(d / "bench.json", {"end_to_end_speedup": 1.2, "layer_speedup": 1.5})


def test_parse_location(tmp_path):
    assert parse_location(tmp_path / "m" / "wanda" / "2-4+lora" / "ppl_c4.json") == ("m", "wanda", "2:4", True,
                                                                                      "ppl_c4")


@pytest.mark.parametrize("tasks,bench,lora", [(True, "skipped", False), (False, None, False), (True, "ok", True)])
def test_report_writes_every_output(tmp_path, tasks, bench, lora):
    synthetic_results(tmp_path / "metrics", tasks=tasks, bench=bench, lora=lora)
    out = tmp_path / "reports"
    subprocess.run([sys.executable, "-m", "wandapp", "report", "--results", str(tmp_path / "metrics"),
                    "--output", str(out)], check=True, capture_output=True)
    for name in FIGURES:
        assert (out / f"{name}.png").stat().st_size > 1000
        assert (out / f"{name}.svg").read_text().lstrip().startswith("<?xml")
    table = collect([tmp_path / "metrics"])
    assert len(table) == 2 * (1 + 12 * (2 if lora else 1))
    dense = table[table.method == "dense"]
    assert (dense.ppl_wikitext2_rel == 1.0).all()
    assert ("acc_mean" in table) == tasks
    md = (out / "summary.md").read_text()
    assert "## tiny-a" in md and "wanda++" in md
    if bench == "skipped":
        assert "no CUDA device" in md


def test_report_fails_cleanly_without_files(tmp_path):
    r = subprocess.run([sys.executable, "-m", "wandapp", "report", "--results", str(tmp_path / "none"),
                        "--output", str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 2
    assert "results not found" in r.stderr


def test_report_reads_the_bench_and_lora_formats_the_commands_write(tmp_path):
    """bench.json as `wandapp bench` writes it (shape of an H100 run), lora.json as `wandapp lora` writes it."""
    d = tmp_path / "metrics" / "m" / "wanda" / "2-4"
    _write(d / "prune.json", {"wall_time_s": 1.0, "sparsity_overall": 0.5, "peak_cpu_rss_bytes": 2**30})
    _write(d / "bench.json", {
        "skipped": False,
        "linear": [{"name": "gate/up_proj", "tokens": 2048, "speedup": 1.31},
                   {"name": "down_proj", "tokens": 2048, "speedup": 0.93},
                   {"name": "gate/up_proj", "tokens": 8192, "speedup": 1.42}],
        "mlp": [{"tokens": 1024, "products_speedup": 1.4}, {"tokens": 2048, "products_speedup": 1.62}],
        "end_to_end": {"prefill_speedup": [{"batch": 1, "prompt_len": 512, "speedup": 0.7},
                                           {"batch": 1, "prompt_len": 2048, "speedup": 0.85},
                                           {"batch": 1, "prompt_len": 2048, "compiled": True, "speedup": 1.31},
                                           {"batch": 4, "prompt_len": 2048, "compiled": True, "speedup": 1.5}],
                       "decode_speedup": [{"batch": 1, "prompt_len": 512, "speedup": 0.999}]}})
    lora = tmp_path / "metrics" / "m" / "wanda" / "2-4+lora"
    _write(lora / "lora.json", {"wall_time_s": 9.0, "ppl_before": 40.0, "ppl_after": 30.0,
                                "sparsity": {"remasked": 0.5}, "mask": {"pruned_weights_nonzero": 0}})
    table = collect([tmp_path / "metrics"])
    row = table[(table.method == "wanda") & ~table.lora].iloc[0]
    assert row.bench_prefill_speedup == 0.85 and row.bench_decode_speedup == 0.999
    assert row.bench_linear_best_speedup_2048_tokens == 1.31
    assert row.bench_compiled_prefill_speedup == 1.31 and row.bench_mlp_products_speedup_2048_tokens == 1.62
    lora_row = table[table.lora].iloc[0]
    assert (lora_row.lora_ppl_before, lora_row.lora_ppl_after, lora_row.lora_nonzero_pruned) == (40.0, 30.0, 0)
    written = write_report(table, tmp_path / "reports")
    assert (tmp_path / "reports" / "speedup.png") in written
    assert "lora_ppl_after" in (tmp_path / "reports" / "summary.csv").read_text()


def test_a_panel_with_one_of_several_methods_puts_its_bar_on_the_tick():
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd
    from matplotlib import pyplot as plt

    from wandapp.report import _grouped_bars

    table = pd.DataFrame(dict(model=["m", "m"], method=["wanda", "magnitude"], lora=[False, False],
                              sparsity=["2:4", "0.5"], value=[1.3, None]))
    fig, ax = plt.subplots()
    series = [("magnitude", False), ("wanda", False)]
    _grouped_bars(ax, table, "value", series, {"magnitude": "grey", "wanda": "blue"})
    bars = [p for p in ax.patches]
    ticks = dict(zip([t.get_text() for t in ax.get_xticklabels()], ax.get_xticks()))
    assert len(bars) == 1 and abs(bars[0].get_x() + bars[0].get_width() / 2 - ticks["2:4"]) < 1e-9
    plt.close(fig)


def test_ppl_figure_draws_each_value_and_the_png_holds_it(tmp_path):
    """More than a file size: every pruned perplexity is a bar of that height in its model's panel, labelled with
    its value; the dense value is the dashed line; the PNG decodes to a non-blank image of the figure's size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image
    from matplotlib.patches import Rectangle

    from wandapp.report import figure_ppl

    synthetic_results(tmp_path / "metrics", tasks=False, bench=None)
    table = collect([tmp_path / "metrics"])
    fig = figure_ppl(table, relative=False)
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert set(panels) == {"tiny-a", "tiny-b"}
    for model, ax in panels.items():
        sub = table[table.model == model]
        want = sorted(sub[sub.method != "dense"].ppl_wikitext2)
        heights = sorted(p.get_height() for p in ax.patches if isinstance(p, Rectangle) and p.get_height() > 0)
        assert heights == pytest.approx(want)
        labels = {t.get_text() for t in ax.texts}
        assert {f"{v:.3g}" for v in want} <= labels
        dense = float(sub[sub.method == "dense"].ppl_wikitext2.iloc[0])
        assert any(list(line.get_ydata()) == [dense, dense] for line in ax.get_lines())
    png = tmp_path / "ppl.png"
    fig.savefig(png, dpi=50)
    image = matplotlib.image.imread(png)
    width, height = fig.get_size_inches() * 50
    assert image.shape[:2] == (round(height), round(width)) and image[..., :3].std() > 0.05
