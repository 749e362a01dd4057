"""Independent references for the core claims: each computes the quantity straight from its definition (the
paper's formula, the full model's own forward pass, a plain loop) without the package's walker, statistics or
mask code, so a wrong implementation of any of them fails here.
"""

import copy

import pytest
import torch

from conftest import build_tiny_llama
from wandapp.adapter import LINEAR_GROUPS, LINEAR_NAMES, DecoderAdapter
from wandapp.data import calibration_windows
from wandapp.masks import SparsityPattern
from wandapp.methods import METHODS, build_method
from wandapp.methods.sparsegpt import sparsegpt_prune
from wandapp.methods.stats import ColumnNorm, Hessian
from wandapp.walker import BlockContext, capture_block_inputs, prune_model

CPU = torch.device("cpu")
ALPHA = 100.0
RO_FAST = dict(ro_lr=1e-3, ro_samples=4, ro_rounds=1)


@pytest.fixture(scope="module")
def calib(data_dir, tokenizer):
    return calibration_windows("c4", tokenizer, 8, 32, 0, data_dir)


@pytest.fixture(scope="module")
def model():
    return build_tiny_llama()


# ---------------------------------------------------------------- reference pieces (no package code)

def _output(result):
    return result[0] if isinstance(result, (tuple, list)) else result


def block_inputs_and_outputs(model, ids, k):
    """(inputs, outputs) of decoder block k over every calibration row, from the full model's own forward pass."""
    block = model.model.layers[k]
    seen = {"in": [], "out": []}
    pre = block.register_forward_pre_hook(
        lambda m, a, kw: seen["in"].append((a[0] if a else kw["hidden_states"]).detach().clone()), with_kwargs=True)
    post = block.register_forward_hook(lambda m, a, o: seen["out"].append(_output(o).detach().clone()))
    try:
        with torch.no_grad():
            for n in range(ids.shape[0]):
                model(ids[n : n + 1], use_cache=False)
    finally:
        pre.remove()
        post.remove()
    return torch.cat(seen["in"]), torch.cat(seen["out"])


def reference_rgs_gradient(model, ids, k=0):
    """The paper's Eq. 3: G = sqrt(1/N sum_n (d ||f^k(X_n)||_2 / dW)^2), one full-model forward per sample, the
    plain (not squared) L2 norm of block k's whole output tensor, autograd straight through the model."""
    block = model.model.layers[k]
    weights = [block.get_submodule(n).weight.requires_grad_(True) for n in LINEAR_NAMES]
    acc = [torch.zeros_like(w, dtype=torch.float64) for w in weights]
    for n in range(ids.shape[0]):
        out = {}
        hook = block.register_forward_hook(lambda m, a, o: out.__setitem__("y", _output(o)))
        try:
            model(ids[n : n + 1], use_cache=False)
        finally:
            hook.remove()
        loss = torch.sqrt((out["y"].double() ** 2).sum())
        for a, g in zip(acc, torch.autograd.grad(loss, weights)):
            a += g.double() ** 2
    return {name: (a / ids.shape[0]).sqrt() for name, a in zip(LINEAR_NAMES, acc)}


def linear_input_norms(model, ids, k, names):
    """||X_j||_2 of each named linear of block k: the L2 norm over every calibration token of its input feature j,
    from a forward pre-hook on the running model (float64, all tokens concatenated)."""
    block = model.model.layers[k]
    seen = {n: [] for n in names}
    hooks = [block.get_submodule(n).register_forward_pre_hook(lambda m, a, n=n: seen[n].append(a[0].detach()))
             for n in names]
    try:
        with torch.no_grad():
            for row in range(ids.shape[0]):
                model(ids[row : row + 1], use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    return {n: torch.cat([x.reshape(-1, x.shape[-1]) for x in seen[n]]).double().square().sum(0).sqrt() for n in names}


def reference_mask(score, pattern):
    """Prune the int(cols * ratio) lowest per row, or the m - n lowest of each group of m, by a stable argsort."""
    rows, cols = score.shape
    mask = torch.zeros(rows, cols, dtype=torch.bool)
    if pattern.is_nm:
        order = torch.argsort(score.reshape(rows, -1, pattern.m), dim=-1, stable=True)[..., : pattern.m - pattern.n]
        mask.view(rows, -1, pattern.m).scatter_(-1, order, True)
    else:
        mask.scatter_(1, torch.argsort(score, dim=1, stable=True)[:, : int(cols * pattern.ratio)], True)
    return mask


def masks_of(model):
    return {name: (lin.weight == 0) for name, lin in DecoderAdapter.from_model(model).all_linears().items()}


def assert_same_masks(got, want):
    for name in want:
        diff = int((got[name] != want[name]).sum())
        assert diff == 0, f"{name}: {diff} of {want[name].numel()} mask entries differ from the reference"


# ---------------------------------------------------------------- RGS gradient and score

def test_rgs_gradient_equals_autograd_of_the_papers_loss(model, calib):
    """G from WandaPlusPlus.regional_gradient equals the RMS over samples of autograd of ||f(X_n)||_2."""
    model = copy.deepcopy(model)
    adapter = DecoderAdapter.from_model(model)
    hidden, kwargs = capture_block_inputs(model, adapter, calib, CPU, CPU)
    block = adapter.blocks[0]
    ctx = BlockContext(0, block, adapter.linears(block), hidden, kwargs, CPU)
    method = build_method("wanda++-rgs", SparsityPattern.parse("2:4"), alpha=ALPHA)
    G, _ = method.regional_gradient(ctx, block)
    want = reference_rgs_gradient(copy.deepcopy(model), calib)
    for name in LINEAR_NAMES:
        torch.testing.assert_close(G[name].double(), want[name], rtol=1e-4, atol=1e-9, msg=name)


@pytest.mark.parametrize("sparsity", ["2:4", "0.5"])
def test_rgs_mask_follows_the_gradient_term(model, calib, sparsity):
    """Wanda++ RGS (alpha = 100) prunes block 0 exactly as a hand-made sequential RGS: per linear group in
    forward order, S = (alpha * G + ||X_j||) * |W| with G from autograd of the paper's loss on the dense block and
    ||X_j|| measured on the running model with the earlier groups pruned. The gradient term decides: the mask
    differs from the same procedure with alpha = 0 (sequential Wanda)."""
    pattern = SparsityPattern.parse(sparsity)

    def manual(alpha):
        ref = copy.deepcopy(model)
        block = ref.model.layers[0]
        G = reference_rgs_gradient(copy.deepcopy(ref), calib)
        for group in LINEAR_GROUPS:
            norms = linear_input_norms(ref, calib, 0, group[:1])[group[0]]
            for name in group:
                w = block.get_submodule(name).weight
                score = (alpha * G[name] + norms.unsqueeze(0)) * w.detach().abs().double()
                with torch.no_grad():
                    w[reference_mask(score, pattern)] = 0
        return {n: block.get_submodule(n).weight == 0 for n in LINEAR_NAMES}

    got_model = copy.deepcopy(model)
    adapter = DecoderAdapter.from_model(got_model)
    hidden, kwargs = capture_block_inputs(got_model, adapter, calib, CPU, CPU)
    block = adapter.blocks[0]
    build_method("wanda++-rgs", pattern, alpha=ALPHA).prune_block(
        BlockContext(0, block, adapter.linears(block), hidden, kwargs, CPU))
    got = {n: block.get_submodule(n).weight == 0 for n in LINEAR_NAMES}
    want = manual(ALPHA)
    assert_same_masks(got, want)
    wanda = manual(0.0)
    changed = sum(int((want[n] != wanda[n]).sum()) for n in LINEAR_NAMES)
    total = sum(want[n].numel() for n in LINEAR_NAMES)
    assert changed > 0.05 * total, f"alpha * G moved only {changed} of {total} mask entries"


# ---------------------------------------------------------------- Wanda statistic and sequential propagation

def test_column_norm_equals_brute_force_over_calibration_tokens(model, calib):
    """ColumnNorm fed micro-batches by BlockContext.collect equals sqrt(sum over all N*T tokens of x_j^2), and its
    per-sample and rms conventions divide by sqrt(N) and sqrt(N*T)."""
    adapter = DecoderAdapter.from_model(model)
    hidden, kwargs = capture_block_inputs(model, adapter, calib, CPU, CPU)
    block = adapter.blocks[0]
    ctx = BlockContext(0, block, adapter.linears(block), hidden, kwargs, CPU, micro_batch=3)
    stats = ctx.collect(ColumnNorm, list(LINEAR_NAMES))
    want = linear_input_norms(model, calib, 0, LINEAR_NAMES)
    n, t = calib.shape
    for name in LINEAR_NAMES:
        torch.testing.assert_close(stats[name].norm().double(), want[name], rtol=1e-5, atol=1e-7, msg=name)
        torch.testing.assert_close(stats[name].norm("per-sample").double(), want[name] / n ** 0.5, rtol=1e-5,
                                   atol=1e-7)
        torch.testing.assert_close(stats[name].norm("rms").double(), want[name] / (n * t) ** 0.5, rtol=1e-5,
                                   atol=1e-7)
        assert stats[name].nsamples == n and stats[name].ntokens == n * t


@pytest.mark.parametrize("sparsity", ["0.5", "4:8"])
def test_wanda_over_the_model_equals_a_brute_force_sequential_wanda(model, calib, sparsity):
    """prune_model(wanda) gives exactly the masks of a brute-force Wanda: for block k = 0, 1, ... hook the seven
    linears on the full model (blocks < k already pruned, block k dense), S = |W| * ||X_j||, reference mask."""
    pattern = SparsityPattern.parse(sparsity)
    ref = copy.deepcopy(model)
    for k, block in enumerate(ref.model.layers):
        norms = linear_input_norms(ref, calib, k, LINEAR_NAMES)
        for name in LINEAR_NAMES:
            w = block.get_submodule(name).weight
            with torch.no_grad():
                w[reference_mask(w.abs().double() * norms[name].unsqueeze(0), pattern)] = 0
    got = copy.deepcopy(model)
    prune_model(got, calib, build_method("wanda", pattern), CPU, micro_batch=3)
    assert_same_masks(masks_of(got), masks_of(ref))


# gblm is left out: its gradient pass runs the DENSE model through every block before the walk, by design
# (GBLM's gradients are the dense model's), so block 1 legitimately sees dense inputs then. magnitude is left out:
# it reads no inputs, so its walk runs no forward at all (tests/test_walker_parts.py checks that).
@pytest.mark.parametrize("method", [m for m, (cls, _) in METHODS.items() if m != "gblm" and cls.reads_inputs])
def test_block_one_sees_the_pruned_block_zero(calib, method):
    """Every input block 1 receives while being pruned is an output of the PRUNED block 0 (recomputed from the
    final model's own forward), never of the dense one, and every calibration sample reaches it. Three blocks:
    the walker skips the last block's output pass, so a last block 1 would see nothing from magnitude."""
    model = build_tiny_llama(num_hidden_layers=3)
    pruned = copy.deepcopy(model)
    seen = []
    # input_layernorm reads the block input in the block's forward and in the staged pass alike
    ln1 = pruned.model.layers[1].input_layernorm
    hook = ln1.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    hyper = RO_FAST if method.startswith("wanda++") else {}
    try:
        prune_model(pruned, calib, build_method(method, SparsityPattern.parse("2:4"), **hyper), CPU)
    finally:
        hook.remove()
    _, want = block_inputs_and_outputs(pruned, calib, 0)  # pruned block 0's outputs (the final model's)
    _, dense = block_inputs_and_outputs(model, calib, 0)
    assert (want - dense).norm() > 0.05 * dense.norm()  # pruning block 0 did change what block 1 gets
    rows = torch.cat([x.reshape(-1, *want.shape[1:]) for x in seen])
    # each seen row against each pruned-block-0 output (exact differences: the matmul form loses ~1e-3 here)
    dist = torch.cdist(rows.flatten(1), want.flatten(1), compute_mode="donot_use_mm_for_euclid_dist")
    nearest = dist.min(1)
    assert (nearest.values <= 1e-4 * want.flatten(1).norm(dim=1).max()).all(), "block 1 saw a non-pruned input"
    assert set(nearest.indices.tolist()) == set(range(calib.shape[0]))


# ---------------------------------------------------------------- SparseGPT against a plain implementation

def plain_sparsegpt(W, H, pattern, blocksize=128, percdamp=0.01):
    """Algorithm 1 of SparseGPT (Frantar & Alistarh 2023) in float64, column by column, without lazy batching:
    U = Cholesky(H^-1)^T; every `blocksize` columns (unstructured) or M columns (N:M) choose the mask from
    w^2 / U_cc^2 on the current weights; for each column c: err = (w_c - q_c) / U_cc, W[:, c:] -= err U[c, c:]."""
    W, H = W.double().clone(), H.double().clone()
    rows, cols = W.shape
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += percdamp * torch.diag(H).mean() * torch.eye(cols, dtype=H.dtype)
    U = torch.linalg.cholesky(torch.linalg.inv(H), upper=True)
    d = torch.diag(U)
    mask = torch.zeros(rows, cols, dtype=torch.bool)
    for c in range(cols):
        if not pattern.is_nm and c % blocksize == 0:
            e = min(c + blocksize, cols)
            score = (W[:, c:e] ** 2 / d[c:e] ** 2).flatten()
            k = int(score.numel() * pattern.ratio)
            block = torch.zeros(score.numel(), dtype=torch.bool)
            block[torch.argsort(score, stable=True)[:k]] = True
            mask[:, c:e] = block.view(rows, e - c)
        if pattern.is_nm and c % pattern.m == 0:
            score = W[:, c : c + pattern.m] ** 2 / d[c : c + pattern.m] ** 2
            drop = torch.argsort(score, dim=1, stable=True)[:, : pattern.m - pattern.n]
            mask[:, c : c + pattern.m].scatter_(1, drop, True)
        q = torch.where(mask[:, c], 0.0, W[:, c])
        err = (W[:, c] - q) / U[c, c]
        W[:, c:] -= err.unsqueeze(1) * U[c, c:].unsqueeze(0)
        W[:, c] = q
    return W, mask


@pytest.mark.parametrize("sparsity,cols", [("0.5", 320), ("2:4", 384), ("0.6", 200)])
def test_sparsegpt_matches_a_plain_reference_beyond_one_block(sparsity, cols):
    """sparsegpt_prune on a matrix wider than its 128-column block (and with a partial last block) equals the
    plain column-by-column algorithm: the same mask, the same updated weights."""
    g = torch.Generator().manual_seed(cols)
    rows = 24
    mix = torch.eye(cols) + 0.3 * torch.randn(cols, cols, generator=g) / cols**0.5
    X = torch.randn(1500, cols, generator=g) @ mix
    X[:, 7] = 0  # a dead input: its column is zeroed and left out of the Hessian
    stat = Hessian(torch.nn.Linear(cols, rows))
    stat.add(X.view(3, 500, cols))
    W = torch.randn(rows, cols, generator=g)
    pattern = SparsityPattern.parse(sparsity)
    got_w, got_mask = sparsegpt_prune(W, stat.H, pattern)
    want_w, want_mask = plain_sparsegpt(W, stat.H.double(), pattern)
    assert torch.equal(got_mask, want_mask)
    torch.testing.assert_close(got_w.double(), want_w, rtol=1e-4, atol=1e-4)
    assert (got_w[:, 7] == 0).all()
    # the update is what SparseGPT adds over masking: it lowers the layer's output error
    masked = W.masked_fill(got_mask, 0)
    assert (X @ (got_w - W).T).norm() < (X @ (masked - W).T).norm()


def test_hessian_is_two_over_n_sequences_sum_of_outer_products():
    """H = (2 / N) * sum over every token of x x^T, N counted in sequences, whatever the batches."""
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(2, 5, 6, generator=g), torch.randn(1, 5, 6, generator=g), torch.randn(3, 5, 6, generator=g)]
    stat = Hessian(torch.nn.Linear(6, 2))
    for b in batches:
        stat.add(b)
    tokens = torch.cat([b.reshape(-1, 6) for b in batches]).double()
    torch.testing.assert_close(stat.H.double(), 2 / 6 * tokens.T @ tokens, rtol=1e-5, atol=1e-6)
    assert stat.nsamples == 6
