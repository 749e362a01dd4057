"""Wanda++'s parts against independent facts: with a vanishing RO step the K-round loop must reduce to the one-shot
prune of the same score (so the loop's score and norms are the claimed ones), RO's reported loss is the block error
it starts from, the in-loop norms over the round's M samples are those M samples' norms rescaled to N, the score's
options follow their formulas, and a 16-bit block keeps its dtype with RO's steps taken in float32.

Written against the survivors of a mutation run (docs/testing.md): each test names the defects it catches."""

import copy

import pytest
import torch

from conftest import build_tiny_llama
from wandapp.adapter import DecoderAdapter
from wandapp.data import calibration_windows
from wandapp.masks import SparsityPattern, follows_nm
from wandapp.methods import build_method
from wandapp.methods.stats import ColumnNorm
from wandapp.walker import BlockContext, capture_block_inputs

CPU = torch.device("cpu")
ALPHA = 100.0  # the gradient term decides part of the mask at this weight (tests/test_references.py)
# 1e-30: RMSprop's steps (at most 10 * lr) vanish below a float32 ulp of every weight; pruned weights stay ~1e-29
STILL = dict(ro_lr=1e-30, ro_samples=8, ro_rounds=2)
NSAMPLES = 16


@pytest.fixture(scope="module")
def setup(data_dir, tokenizer):
    model = build_tiny_llama()
    ids = calibration_windows("c4", tokenizer, NSAMPLES, 64, 0, data_dir)
    adapter = DecoderAdapter.from_model(model)
    hidden, kwargs = capture_block_inputs(model, adapter, ids, CPU, CPU)
    return adapter, hidden, kwargs


def context(setup, index=0, dtype=None, hidden=None):
    adapter, all_hidden, kwargs = setup
    block = copy.deepcopy(adapter.blocks[0])
    if dtype is not None:
        block.to(dtype)
    return BlockContext(index, block, adapter.linears(block), all_hidden if hidden is None else hidden, kwargs, CPU)


def prune(setup, method, sparsity="2:4", index=0, dtype=None, **hyper):
    ctx = context(setup, index, dtype)
    build_method(method, SparsityPattern.parse(sparsity), **hyper).prune_block(ctx)
    return ctx


def weights(ctx):
    return {n: lin.weight.detach().clone() for n, lin in ctx.linears.items()}


@pytest.mark.parametrize("sparsity", ["2:4", "0.5"])
@pytest.mark.parametrize("method, one_shot, alpha", [("wanda++", "wanda++-rgs", ALPHA),
                                                     ("wanda++-ro", "wanda++-rgs", 0.0)])
def test_the_loop_with_a_vanishing_step_is_the_one_shot_prune(setup, method, one_shot, alpha, sparsity):
    """K rounds of prune + RO that cannot move a weight end where one prune of the same score ends: Wanda++'s
    loop at the RGS mask (alpha * G in every round, norms over all N samples by default), the RO ablation's at
    sequential Wanda's. Catches: G dropped from the loop's prunes, the RO ablation scoring with G, the default
    in-loop norms taken over the round's M samples only."""
    looped = weights(prune(setup, method, sparsity, alpha=ALPHA, **STILL))
    once = weights(prune(setup, one_shot, sparsity, alpha=alpha))
    for name in once:
        assert torch.equal(looped[name], once[name]), name


def test_the_ro_loss_is_the_error_it_starts_from_when_the_step_vanishes(setup):
    """RO's logged loss is the mean over its M samples (and epochs) of the summed squared error against the dense
    block's outputs: with no step, the pruned block's error (computed apart, by _error). Batches of 2 and two
    epochs: catches a loss summed over one batch or one epoch, a wrong mean, batches misaligned with targets."""
    ctx = prune(setup, "wanda++", alpha=ALPHA, **STILL, ro_batch=2, ro_epochs=2, track_error=True)
    rounds = ctx.log["ro_rounds"]
    assert len(rounds) == STILL["ro_rounds"]
    for r in rounds:
        assert r["error_pruned"] > 0
        assert r["ro_loss"] == pytest.approx(r["error_pruned"], rel=1e-5)
        assert r["error_ro"] == pytest.approx(r["error_pruned"], rel=1e-5)
    plain = prune(setup, "wanda++", alpha=ALPHA, **STILL)
    assert [set(r) for r in plain.log["ro_rounds"]] == [{"ro_loss"}] * STILL["ro_rounds"]


def test_loop_norms_ro_uses_the_rounds_samples_rescaled_to_n(setup):
    """loop_norms='ro': the round's prune measures ||X_j|| over its M drawn samples and scales it by sqrt(N/M), so
    its ranking is that of (alpha * sqrt(M/N) * G + ||X_j||_M) * |W| on those M samples alone. Block index 1 and
    seed 3 make the draw depend on both. Catches: norms over all N, no or a wrong rescale, unseeded draws."""
    m, index, seed = 8, 1, 3  # N / M = 2 (not 4, where sqrt(N / M) = N / M / 2 would hide a wrong rescale)
    hyper = dict(STILL, ro_samples=m, ro_rounds=1, loop_norms="ro", seed=seed)
    got = weights(prune(setup, "wanda++", index=index, alpha=ALPHA, **hyper))

    draw = torch.randperm(NSAMPLES, generator=torch.Generator().manual_seed(seed * 1_000_003 + index))[:m]
    full = context(setup, index)
    G, _ = build_method("wanda++-rgs", SparsityPattern.parse("2:4"), alpha=ALPHA).regional_gradient(full, full.block)
    sub = context(setup, index, hidden=full.inputs[draw])
    build_method("wanda++-rgs", SparsityPattern.parse("2:4"), alpha=ALPHA * (m / NSAMPLES) ** 0.5).rgs_prune(sub, G)
    want = weights(sub)
    for name in want:
        assert torch.equal(got[name] == 0, want[name] == 0), name
    # the subset's norms really decide: over all N samples the loop would prune otherwise
    all_n = weights(prune(setup, "wanda++", index=index, alpha=ALPHA, **dict(hyper, loop_norms="all")))
    assert any(not torch.equal(all_n[n] == 0, want[n] == 0) for n in want)


def column_norm(x: torch.Tensor, nsamples: int) -> ColumnNorm:
    stat = ColumnNorm(torch.nn.Linear(x.shape[-1], 1))
    for chunk in x.chunk(nsamples):
        stat.add(chunk)
    return stat


@pytest.mark.parametrize("x_norm, divisor", [("l2", 1), ("per-sample", 3), ("rms", 3 * 5)])
def test_score_formula_and_the_subset_rescale(x_norm, divisor):
    """S = (alpha * G + ||X_j||) * |W| with ||X_j|| in the named convention; only the l2 norm over a subset of the
    N samples is rescaled by sqrt(N / n), the per-sample and rms norms are already per sample or token.
    g_norm='mean' first scales G by mean(||X||) / mean(G)."""
    torch.manual_seed(0)
    w, g, x = torch.randn(4, 6), torch.rand(4, 6), torch.randn(3, 5, 6)  # 3 samples of 5 tokens
    stat = column_norm(x, 3)
    xn = (x.reshape(-1, 6).square().sum(0) / divisor).sqrt()
    rescale = (27 / 3) ** 0.5 if x_norm == "l2" else 1.0  # the stat saw 3 of N = 27 (sqrt(4) = 4 / 2: not 12)
    method = build_method("wanda++", SparsityPattern.parse("2:4"), alpha=2.0, x_norm=x_norm)
    torch.testing.assert_close(method.score(w, stat, g, 3), (2.0 * g + xn) * w.abs())
    torch.testing.assert_close(method.score(w, stat, g, 27), (2.0 * g + xn * rescale) * w.abs())
    torch.testing.assert_close(method.score(w, stat, None, 27), w.abs() * xn * rescale)
    mean = build_method("wanda++", SparsityPattern.parse("2:4"), alpha=2.0, x_norm=x_norm, g_norm="mean")
    torch.testing.assert_close(mean.score(w, stat, g, 3), (2.0 * g * (xn.mean() / g.mean()) + xn) * w.abs())


@pytest.mark.parametrize("method", ["wanda++", "wanda++-rgs", "wanda++-ro"])
def test_no_weight_is_left_trainable(setup, method):
    """The gradient passes turn gradients on for the seven weights; the pruned block must leave with none on
    (a saved or evaluated model would otherwise build autograd graphs). Catches a missing reset."""
    ctx = prune(setup, method, alpha=ALPHA, ro_lr=1e-3, ro_samples=4, ro_rounds=1)
    assert not any(p.requires_grad for p in ctx.block.parameters())


def test_a_bf16_block_keeps_its_dtype_and_ro_steps_in_float32(setup):
    """A bfloat16 block comes back in bfloat16, 2:4 exact, and RO's steps accumulate in float32 master weights: its
    kept weights are the bfloat16 rounding of the same RO run on a float32 copy of the block. Catches: the block
    left in float32, RO run on the 16-bit weights (whose small steps round away)."""
    hyper = dict(ro_lr=1e-4, ro_samples=8, ro_rounds=3)
    half = weights(prune(setup, "wanda++-ro", dtype=torch.bfloat16, **hyper))
    full = context(setup, dtype=torch.bfloat16)
    full.block.float()  # the same bfloat16 values, in float32
    build_method("wanda++-ro", SparsityPattern.parse("2:4"), **hyper).prune_block(full)
    full.block.to(torch.bfloat16)
    master = weights(full)
    agree = total = 0
    for name, w in half.items():
        assert w.dtype == torch.bfloat16 and follows_nm(w, 2, 4), name
        kept = (w != 0) & (master[name] != 0)
        agree += int((w[kept] == master[name][kept]).sum())
        total += int(kept.sum())
    # the final prune's norms are computed in bfloat16 in one run and float32 in the other: a few masks differ
    assert total > 0.45 * sum(w.numel() for w in half.values())
    assert agree == total


@pytest.mark.parametrize("alpha, passes", [(0.0, 0), (1.0, 1), (ALPHA, 1)])
def test_the_gradient_pass_runs_for_every_positive_alpha(setup, monkeypatch, alpha, passes):
    """G is computed (one regional-gradient pass per block) whenever alpha > 0, and skipped at alpha = 0, where the
    score is Wanda's."""
    from wandapp.methods.wanda_plus_plus import WandaPlusPlus

    calls = []
    original = WandaPlusPlus.regional_gradient
    monkeypatch.setattr(WandaPlusPlus, "regional_gradient", lambda self, *a, **k: calls.append(1) or original(
        self, *a, **k))
    prune(setup, "wanda++-rgs", alpha=alpha)
    assert len(calls) == passes


@pytest.mark.parametrize("device, precision, copies", [("cuda", "bf16", True), ("cuda", "fp32", False),
                                                       ("cuda", "tf32", False), ("cpu", "bf16", False)])
def test_a_bfloat16_compute_copy_only_for_bf16_on_cuda(setup, device, precision, copies):
    """On CUDA with precision bf16 the passes run on a separate bfloat16 copy of the block with no gradients on;
    the float32 master is left as it was. Elsewhere the block computes itself. (Only the device's type is read,
    so a CPU block stands in.)"""
    ctx = context(setup)
    before = weights(ctx)
    fake = copy.copy(ctx)
    fake.device = torch.device(device)
    method = build_method("wanda++", SparsityPattern.parse("2:4"), precision=precision)
    work = method.compute_copy(fake)
    if not copies:
        assert work is ctx.block
        return
    assert work is not ctx.block and all(p.dtype == torch.bfloat16 and not p.requires_grad for p in work.parameters())
    for name, w in before.items():
        assert torch.equal(work.get_submodule(name).weight, w.to(torch.bfloat16)), name
        assert torch.equal(ctx.linears[name].weight, w) and ctx.linears[name].weight.dtype == torch.float32, name
