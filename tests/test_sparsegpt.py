"""The faster SparseGPT gives the masks and updates of the 4f5ea66 code (kept in sparsegpt_reference.py)."""

import copy

import pytest
import torch

from conftest import build_tiny_llama
from sparsegpt_reference import hessian_4f5ea66, sparsegpt_prune_4f5ea66
from wandapp.adapter import DecoderAdapter
from wandapp.masks import SparsityPattern, apply_mask
from wandapp.methods import build_method
from wandapp.methods.sparsegpt import sparsegpt_prune
from wandapp.methods.stats import Hessian
from wandapp.walker import BlockContext, capture_block_inputs

PATTERNS = ["0.5", "2:4", "4:8", "0.3"]


def problem(rows, cols, tokens=512, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, cols, generator=g, dtype=torch.float64) * torch.linspace(0.2, 3, cols, dtype=torch.float64)
    x[:, 5] = 0  # a dead input column
    H = (2 / tokens * x.T @ x).to(dtype)
    W = torch.randn(rows, cols, generator=g, dtype=dtype)
    return W, H


@pytest.mark.parametrize("sparsity", PATTERNS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_same_masks_and_updates_as_4f5ea66(sparsity, dtype):
    pattern = SparsityPattern.parse(sparsity)
    W, H = problem(48, 320, dtype=dtype)  # 320 = two full 128-column blocks and a narrower one
    ref_w, ref_mask = sparsegpt_prune_4f5ea66(W, H, pattern)
    new_w, new_mask = sparsegpt_prune(W, H, pattern)
    assert torch.equal(new_mask, ref_mask)
    assert new_w.dtype == ref_w.dtype
    torch.testing.assert_close(new_w, ref_w, rtol=0, atol=0)  # bitwise: the same operations on the same values


@pytest.mark.parametrize("sparsity", PATTERNS)
def test_row_stacked_linears_prune_as_each_alone(sparsity):
    """q, k, v (or gate, up) stacked as one matrix over their shared Hessian: each keeps its own mask and update."""
    pattern = SparsityPattern.parse(sparsity)
    parts = [problem(r, 256, seed=s)[0] for r, s in ((32, 1), (16, 2), (16, 3))]
    _, H = problem(1, 256)
    stacked_w, stacked_mask = sparsegpt_prune(torch.cat(parts), H, pattern, segments=[32, 16, 16])
    start = 0
    for part in parts:
        alone_w, alone_mask = sparsegpt_prune(part, H, pattern)
        rows = slice(start, start + part.shape[0])
        assert torch.equal(stacked_mask[rows], alone_mask)
        torch.testing.assert_close(stacked_w[rows], alone_w, rtol=1e-6, atol=1e-6)  # the lazy GEMM's M changes
        start += part.shape[0]
    if not pattern.is_nm:
        with pytest.raises(ValueError, match="add up"):
            sparsegpt_prune(torch.cat(parts), H, pattern, segments=[32, 16])


def test_hessian_equals_the_running_mean_of_4f5ea66():
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(b, 24, 40, generator=g).to(torch.float16) for b in (3, 1, 4)]
    linear = torch.nn.Linear(40, 8)
    stat = Hessian(linear)
    for x in batches:
        stat.add(x)
    assert stat.nsamples == 8
    ref = hessian_4f5ea66(batches)
    exact = sum(2 / 8 * x.double().reshape(-1, 40).T @ x.double().reshape(-1, 40) for x in batches)
    scale = float(exact.abs().max())
    torch.testing.assert_close(stat.H, ref, rtol=0, atol=1e-6 * scale)  # float32 summation order only
    assert float((stat.H.double() - exact).abs().max()) <= 2 * float((ref.double() - exact).abs().max()) + 1e-7 * scale


def test_block_prune_stacks_groups_and_matches_linear_by_linear(data_dir, tokenizer):
    from wandapp.data import calibration_windows

    model = build_tiny_llama()
    ids = calibration_windows("c4", tokenizer, 8, 64, 0, data_dir)
    adapter = DecoderAdapter.from_model(model)
    cpu = torch.device("cpu")
    hidden, kwargs = capture_block_inputs(model, adapter, ids, cpu, cpu)
    pattern = SparsityPattern.parse("2:4")
    method = build_method("sparsegpt", pattern)

    stacked = copy.deepcopy(adapter.blocks[0])
    ctx = BlockContext(0, stacked, adapter.linears(stacked), hidden, kwargs, cpu)
    method.prune_block(ctx)
    assert ctx.log["column_loop"] == "eager"

    alone = copy.deepcopy(adapter.blocks[0])
    actx = BlockContext(0, alone, adapter.linears(alone), hidden, kwargs, cpu)
    stats = actx.collect(Hessian, list(actx.linears))
    for name, linear in actx.linears.items():
        W, mask = sparsegpt_prune_4f5ea66(linear.weight, stats[name].H, pattern)
        linear.weight.data.copy_(W.to(linear.weight.dtype))
        apply_mask(linear.weight.data, mask)
    for name in ctx.linears:
        a, b = ctx.linears[name].weight, actx.linears[name].weight
        assert torch.equal(a == 0, b == 0), name
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
