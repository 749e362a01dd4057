"""Sparsity profiles: OWL's per-block ratios against a direct computation on the dense model, and the exact mean
over all pruned weights for every unstructured method."""

import math

import numpy as np
import pytest
import torch

from conftest import build_tiny_llama
from wandapp.adapter import DecoderAdapter
from wandapp.data import calibration_windows
from wandapp.masks import SparsityPattern, count_mask
from wandapp.methods import build_method
from wandapp.profile import exact_counts, owl_ratios, with_profile
from wandapp.walker import prune_model

CPU = torch.device("cpu")
LAYERS = 4


@pytest.fixture(scope="module")
def calib(data_dir, tokenizer):
    return calibration_windows("c4", tokenizer, 8, 32, 0, data_dir)


def direct_owl(model, ids, target, m=5.0, lam=0.08):
    """OWL's reference steps: Wanda scores of each dense block's linears from plain hooks on the whole dense
    model, the share above m * mean, then the published mapping (numpy, unweighted mean: equal blocks)."""
    adapter = DecoderAdapter.from_model(model)
    seen = {}
    hooks = [lin.register_forward_pre_hook(lambda mod, a, name=name: seen.setdefault(name, []).append(a[0]))
             for name, lin in adapter.all_linears().items()]
    with torch.no_grad():
        for n in range(ids.shape[0]):
            model(ids[n : n + 1], use_cache=False)
    for h in hooks:
        h.remove()
    shares = []
    for i, block in enumerate(adapter.blocks):
        scores = []
        for name, lin in adapter.linears(block).items():
            x = torch.cat([t.reshape(-1, t.shape[-1]) for t in seen[f"layers.{i}.{name}"]])
            scores.append((lin.weight.abs() * x.norm(dim=0)).flatten())
        s = torch.cat(scores)
        shares.append(float((s > m * s.mean()).sum()) / s.numel())
    d = np.array(shares)
    d = (d - d.min()) * (1 / (d.max() - d.min()) * lam * 2)
    density = d - np.mean(d) + (1 - target)
    return shares, list(1 - density)


def test_owl_ratios_match_a_direct_computation(calib):
    model = build_tiny_llama(num_hidden_layers=LAYERS)
    shares, expected = direct_owl(model, calib, 0.6)
    method = with_profile(build_method("wanda", SparsityPattern.parse("0.6")), SparsityPattern.parse("0.6"), "owl")
    method.prepare(model, calib, CPU)
    assert method.shares == pytest.approx(shares, abs=1e-9)
    assert method.ratios == pytest.approx(expected, abs=1e-9)
    assert max(method.ratios) - min(method.ratios) == pytest.approx(2 * 0.08)  # the shares differ on this model


@pytest.mark.parametrize("method,hyper", [
    ("wanda", {}), ("magnitude", {}), ("sparsegpt", {}), ("gblm", {}),
    ("wanda++", dict(ro_lr=1e-3, ro_samples=4, ro_rounds=1)),
])
def test_owl_mean_over_all_pruned_weights_is_exact(calib, method, hyper):
    model = build_tiny_llama(num_hidden_layers=LAYERS)
    pattern = SparsityPattern.parse("0.6")
    profiled = with_profile(build_method(method, pattern, **hyper), pattern, "owl", owl_lambda=0.1)
    prune_model(model, calib, profiled, CPU)
    adapter = DecoderAdapter.from_model(model)
    total = sum(lin.weight.numel() for lin in adapter.all_linears().values())
    zeros = [sum(int((lin.weight == 0).sum()) for lin in adapter.linears(b).values()) for b in adapter.blocks]
    assert sum(zeros) == math.floor(0.6 * total + 0.5)
    assert zeros == profiled.report()["block_counts"]
    assert len(set(zeros)) > 1  # the blocks really differ
    if method != "sparsegpt":  # the others compare per output row: rows differ by at most one
        for lin in adapter.all_linears().values():
            per_row = (lin.weight == 0).sum(1)
            assert int(per_row.max() - per_row.min()) <= 1


def test_exact_counts_with_unequal_layer_sizes():
    sizes = [{"a": 1000, "b": 37}, {"a": 333, "b": 999}, {"a": 5}]
    ratios = owl_ratios([0.01, 0.05, 0.03], 0.55, 0.08, [sum(s.values()) for s in sizes])
    total = sum(n for s in sizes for n in s.values())
    assert sum(r * sum(s.values()) for r, s in zip(ratios, sizes)) / total == pytest.approx(0.55, abs=1e-12)
    counts = exact_counts(ratios, sizes, 0.55)
    assert sum(c for block in counts for c in block.values()) == math.floor(0.55 * total + 0.5)
    for r, block, size in zip(ratios, counts, sizes):
        for name, c in block.items():
            assert abs(c - r * size[name]) < 1


def test_count_mask_is_exact_and_per_row():
    score = torch.rand(5, 12, generator=torch.Generator().manual_seed(0))
    mask = count_mask(score, 23)  # 4 per row, one more in the first 3 rows
    assert mask.sum(1).tolist() == [5, 5, 5, 4, 4]
    for r in range(5):
        assert set(torch.nonzero(mask[r]).flatten().tolist()) == set(score[r].argsort()[: int(mask[r].sum())].tolist())


def test_cli_owl_report(tiny_llama_dir, data_dir, tmp_path):
    import json

    from wandapp.cli import main

    out = tmp_path / "owl"
    assert main(["prune", "--model", str(tiny_llama_dir), "--method", "wanda", "--sparsity", "0.7", "--nsamples", "4",
                 "--seqlen", "32", "--device", "cpu", "--data-dir", str(data_dir), "--sparsity-profile", "owl",
                 "--owl-m", "3", "--output", str(out)]) == 0
    report = json.loads((out / "prune_report.json").read_text())
    profile = report["sparsity_profile"]
    assert profile["name"] == "owl" and profile["M"] == 3 and profile["lambda"] == 0.08
    assert len(profile["block_ratios"]) == 2 and sum(profile["block_ratios"]) / 2 == pytest.approx(0.7)
    total = 2 * sum(n for n in (64 * 64, 32 * 64, 32 * 64, 64 * 64, 128 * 64, 128 * 64, 64 * 128))
    assert report["sparsity_overall"] * total == pytest.approx(math.floor(0.7 * total + 0.5))
