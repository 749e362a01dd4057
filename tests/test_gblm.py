"""GBLM-Pruner on a tiny Llama fed real C4 text: the block-wise gradient pass against plain autograd on the whole
model, the score and masks against a brute-force reading of the formula, exact sparsity per pattern."""

import copy

import pytest
import torch

from conftest import build_tiny_llama
from wandapp.adapter import DecoderAdapter
from wandapp.data import calibration_windows
from wandapp.masks import SparsityPattern, follows_nm
from wandapp.methods import build_method
from wandapp.methods.gblm import lm_gradients
from wandapp.walker import prune_model

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def calib(data_dir, tokenizer):
    return calibration_windows("c4", tokenizer, 5, 32, 0, data_dir)


def direct_gradients(model, ids, scale, norm):
    """sum_n (scale g_n)^2 (then sqrt) or sum_n |scale g_n| per linear, g_n from model(ids_n, labels=ids_n).loss."""
    linears = DecoderAdapter.from_model(model).all_linears()
    acc = {name: torch.zeros_like(lin.weight) for name, lin in linears.items()}
    for n in range(ids.shape[0]):
        model.zero_grad()
        model(ids[n : n + 1], labels=ids[n : n + 1], use_cache=False).loss.backward()
        for name, lin in linears.items():
            g = scale * lin.weight.grad
            acc[name] += g.square() if norm == "l2" else g.abs()
    model.zero_grad()
    return {k: (v.sqrt() if norm == "l2" else v) for k, v in acc.items()}


@pytest.mark.parametrize("norm", ["l2", "l1"])
def test_blockwise_gradients_equal_whole_model_autograd(calib, norm):
    model = build_tiny_llama()
    expected = direct_gradients(model, calib, 100.0, norm)
    got = lm_gradients(model, calib, CPU, scale=100.0, norm=norm, chunk=2)  # 5 samples: chunks of 2, 2, 1
    for i, block in enumerate(got):
        for name, G in block.items():
            ref = expected[f"layers.{i}.{name}"]
            assert G.dtype == torch.float32 and G.device.type == "cpu"
            torch.testing.assert_close(G, ref, rtol=1e-4, atol=1e-6 * float(ref.abs().max()))
    assert all(p.grad is None for p in model.parameters())
    assert not any(p.requires_grad is False for p in model.parameters())  # flags restored


def brute_force_mask(score, pattern):
    """Pruned positions by plain Python: per row the k lowest (ties to the lower index), or per group of M the
    M - N lowest."""
    rows, cols = score.shape
    mask = torch.zeros(rows, cols, dtype=torch.bool)
    for r in range(rows):
        row = score[r].tolist()
        spans = [range(s, s + pattern.m) for s in range(0, cols, pattern.m)] if pattern.is_nm else [range(cols)]
        drop = (pattern.m - pattern.n) if pattern.is_nm else int(cols * pattern.ratio)
        for span in spans:
            for j in sorted(span, key=lambda j: (row[j], j))[:drop]:
                mask[r, j] = True
    return mask


@pytest.mark.parametrize("sparsity", ["0.5", "2:4", "4:8"])
@pytest.mark.parametrize("x_norm", ["per-sample", "l2"])
def test_score_and_masks_follow_the_formula(calib, sparsity, x_norm):
    """One-block model: the walker's inputs to every linear are the dense model's, so the score is checkable
    from plain hooks: |W| * ||X_j|| + |W| * G with G from whole-model autograd."""
    dense = build_tiny_llama(num_hidden_layers=1)
    model = copy.deepcopy(dense)
    pattern = SparsityPattern.parse(sparsity)
    method = build_method("gblm", pattern, x_norm=x_norm, gradient_chunk=3)
    prune_model(model, calib, method, CPU)

    G = direct_gradients(dense, calib, 100.0, "l2")
    linears = DecoderAdapter.from_model(dense).all_linears()
    seen = {name: [] for name in linears}
    hooks = [lin.register_forward_pre_hook(lambda m, a, name=name: seen[name].append(a[0].detach()))
             for name, lin in linears.items()]
    with torch.no_grad():
        for n in range(calib.shape[0]):
            dense(calib[n : n + 1], use_cache=False)
    for h in hooks:
        h.remove()
    pruned = DecoderAdapter.from_model(model).all_linears()
    for name, lin in linears.items():
        x = torch.cat([t.reshape(-1, t.shape[-1]) for t in seen[name]])
        xn = x.square().sum(0).sqrt() / (calib.shape[0] ** 0.5 if x_norm == "per-sample" else 1)
        w = lin.weight.detach().abs()
        score = w * xn + w * G[name]
        zeros = pruned[name].weight == 0
        assert torch.equal(zeros, brute_force_mask(score, pattern)), name


@pytest.mark.parametrize("sparsity", ["0.5", "0.7", "2:4", "4:8"])
def test_exact_sparsity_per_pattern(calib, sparsity):
    model = build_tiny_llama()
    pattern = SparsityPattern.parse(sparsity)
    logs = prune_model(model, calib, build_method("gblm", pattern), CPU)
    assert len(logs) == 2
    for name, lin in DecoderAdapter.from_model(model).all_linears().items():
        w = lin.weight
        if pattern.is_nm:
            assert follows_nm(w, pattern.n, pattern.m)
            assert int((w == 0).sum()) == w.numel() * (pattern.m - pattern.n) // pattern.m
        else:
            assert ((w == 0).sum(1) == int(w.shape[1] * pattern.ratio)).all(), name


def test_gradient_options_are_checked():
    from wandapp.errors import WandappError

    with pytest.raises(WandappError, match="gradient_norm"):
        build_method("gblm", SparsityPattern.parse("0.5"), gradient_norm="l3")
    with pytest.raises(WandappError, match="x_norm"):
        build_method("gblm", SparsityPattern.parse("0.5"), x_norm="l3")


def test_cli_prunes_with_gblm(tiny_llama_dir, data_dir, tmp_path):
    import json

    from wandapp.cli import main

    out = tmp_path / "gblm"
    assert main(["prune", "--model", str(tiny_llama_dir), "--method", "gblm", "--sparsity", "2:4", "--nsamples", "4",
                 "--seqlen", "32", "--device", "cpu", "--data-dir", str(data_dir), "--gradient-norm", "l1",
                 "--output", str(out)]) == 0
    report = json.loads((out / "prune_report.json").read_text())
    assert report["method"] == "gblm" and report["sparsity_overall"] == 0.5
    assert report["hyperparameters"] == {"gradient_norm": "l1", "gradient_scale": 100.0, "x_norm": "per-sample",
                                         "gradient_chunk": 16}


def test_gradient_pass_puts_every_block_back(calib, monkeypatch):
    """With offload, each block goes home after its sweep (a CPU-only run cannot see a block left on the device,
    so count the moves)."""
    import wandapp.methods.gblm as gblm

    model = build_tiny_llama()
    moves = []
    real = gblm._moved

    def counted(blocks, device, offload):
        for block in real(blocks, device, offload):
            moves.append(("out", id(block)))
            yield block
            moves.append(("home", id(block)))

    monkeypatch.setattr(gblm, "_moved", counted)
    lm_gradients(model, calib, CPU, chunk=5)
    assert sorted(moves).count(("home", id(model.model.layers[0]))) == 2  # forward and backward sweep
    assert len([m for m in moves if m[0] == "home"]) == len([m for m in moves if m[0] == "out"]) == 4


def test_shared_x_norm_flag_names_each_default():
    from wandapp.methods import build_method as build
    from wandapp.methods import hyperparameter_table

    h = hyperparameter_table()["x_norm"]
    assert h.families == ("gblm", "wanda++") and "per-sample for gblm, l2 for wanda++" in h.description
    pattern = SparsityPattern.parse("0.5")
    assert build("gblm", pattern).x_norm == "per-sample" and build("wanda++", pattern).x_norm == "l2"
