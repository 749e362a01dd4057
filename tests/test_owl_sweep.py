"""benchmarks/pruning/owl_sweep.py end to end on the CPU at tiny size: every run lands in the JSONL and the table."""

import json

from benchmarks.pruning import owl_sweep


def test_owl_sweep_runs_every_method_and_profile(tiny_llama_dir, data_dir, tmp_path):
    out = tmp_path / "owl.jsonl"
    tiny = ["--model", str(tiny_llama_dir), "--data-dir", str(data_dir), "--device", "cpu", "--dtype", "float32",
            "--nsamples", "2", "--seqlen", "32", "--max-windows", "2", "--output", str(out)]
    owl_sweep.main(tiny)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 1 + 2 * 3 * 2  # dense, then 2 sparsities x 3 methods x 2 profiles
    assert {(r["method"], r["sparsity"], r["profile"]) for r in rows[1:]} == {
        (m, s, p) for m in ("wanda", "sparsegpt", "wanda++") for s in ("0.6", "0.7") for p in ("uniform", "owl")}
    for r in rows[1:]:
        assert r["ppl"] > 1 and r["sparsity_profile"]["name"] == r["profile"]
        if r["profile"] == "owl":  # exact mean over all pruned weights, to half a weight
            assert abs(r["sparsity_overall"] - float(r["sparsity"])) < 1e-4
            assert len(r["sparsity_profile"]["block_ratios"]) == 2
    md = (tmp_path / "owl.md").read_text()
    assert "| wanda++ | owl |" in md and "| 60% | 70% |" in md
    assert md.count("\n| ") == 1 + 6  # the header, 3 methods x 2 profiles
    # a later call appending one cell again: the table still covers every run in the file, the cell its latest
    owl_sweep.main([*tiny, "--sparsities", "0.7", "--methods", "wanda", "--profiles", "uniform"])
    assert len(out.read_text().splitlines()) == len(rows) + 2
    again = (tmp_path / "owl.md").read_text()
    assert again.count("\n| ") == 1 + 6 and "| sparsegpt | owl |" in again
