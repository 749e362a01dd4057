"""The streaming benchmark and its 70B projection, at tiny size on the CPU."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.pruning.project_70b import SHAPES, Shape, per_block, project

REPO = Path(__file__).resolve().parents[1]


def test_shapes_have_the_published_parameter_counts():
    assert SHAPES["llama-13b"].params() / 1e9 == pytest.approx(13.02, abs=0.01)  # LLaMA-13B
    assert SHAPES["llama-70b"].params() / 1e9 == pytest.approx(68.98, abs=0.01)  # LLaMA-2-70B (8 KV heads)


def row(mode, blocks=10, **kw):
    shape = {**vars(SHAPES["llama-13b"]), "blocks": blocks}
    return {"kind": "run", "method": "wanda", "mode": mode, "shape": shape, "blocks": blocks, "nsamples": 128,
            "seqlen": 2048, "total_s": 40.0, "prune_s": 30.0, "peak_rss_bytes": 8e9, "peak_gpu_bytes": 12e9, **kw}


def test_projection_onto_the_measured_shape_gives_the_measurement_back():
    for mode in ("stream", "memory"):
        r = row(mode)
        p = project(r, Shape(**r["shape"]), fixed_s=4.0)
        assert (p["prune_s"], p["total_s"]) == (30.0, 40.0)
        assert p["peak_cpu_gb"] == 8.0 and p["peak_gpu_gb"] == 12.0


def test_projection_scales_blocks_and_block_size():
    r = row("stream")
    full = project(r, SHAPES["llama-13b"])
    assert full["prune_s"] == pytest.approx(4 * 30.0, abs=0.1)
    assert full["total_s"] == pytest.approx(10.0 + 4 * 30.0, abs=0.1)  # the fixed part does not grow
    big = project(r, SHAPES["llama-70b"])
    ratio = SHAPES["llama-70b"].block_params() / SHAPES["llama-13b"].block_params()
    assert big["prune_s"] == pytest.approx(8 * 30.0 * ratio, rel=1e-3)
    # streamed CPU memory grows by 3 blocks and the embeddings, not by the model
    grow = 3 * (SHAPES["llama-70b"].block_params() - SHAPES["llama-13b"].block_params()) * 2
    grow += (SHAPES["llama-70b"].outside_params() - SHAPES["llama-13b"].outside_params()) * 2
    assert big["peak_cpu_gb"] == pytest.approx(8.0 + grow / 1e9, abs=0.01)
    assert project(row("memory"), SHAPES["llama-70b"])["peak_cpu_gb"] > 138
    assert per_block(r)["runtime_rss_bytes"] < 8e9


def test_benchmark_runs_at_tiny_size_on_cpu(tmp_path):
    out = tmp_path / "rows.jsonl"
    done = subprocess.run([sys.executable, "-m", "benchmarks.pruning.stream_13b", "--shape", "tiny", "--device", "cpu",
                           "--nsamples", "4", "--seqlen", "32", "--methods", "wanda", "--workdir", str(tmp_path / "w"),
                           "--output", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    runs = {r["mode"]: r for r in rows if r["kind"] == "run"}
    assert set(runs) == {"memory", "stream"} and all(r["bitwise_equal"] for r in runs.values())
    assert all(r["peak_rss_bytes"] > 0 and r["total_s"] >= r["prune_s"] > 0 for r in runs.values())
    # the child's own peak: not above wait4's (up to page-accounting noise), which also holds what Linux carries
    # over from this parent at exec
    assert all(r["peak_rss_bytes"] <= 1.01 * r["wait4_maxrss_bytes"] for r in runs.values())
    compare = next(r for r in rows if r["kind"] == "compare")
    assert compare["bitwise_equal"] and compare["total_time_ratio"] > 0
    projections = [r for r in rows if r["kind"] == "projection"]
    assert {p["target_name"] for p in projections} == {"tiny-full", "llama-70b"} and len(projections) == 4
    assert not (tmp_path / "w").exists()  # the scratch model is removed


def test_benchmark_runs_one_path_alone(tmp_path):
    out = tmp_path / "rows.jsonl"
    done = subprocess.run([sys.executable, "-m", "benchmarks.pruning.stream_13b", "--shape", "tiny", "--blocks", "2",
                           "--device", "cpu", "--nsamples", "2", "--seqlen", "16", "--methods", "magnitude",
                           "--modes", "stream", "--workdir", str(tmp_path / "w"), "--output", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["run", "projection", "projection"]
    assert rows[0]["mode"] == "stream" and rows[0]["bitwise_equal"] is None and rows[0]["blocks"] == 2
    assert all(r["elapsed_s"] >= 0 for r in rows)
