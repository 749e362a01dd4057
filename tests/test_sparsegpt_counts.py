"""SparseGPT's exact-count path (a sparsity profile's per-linear counts) and its one-linear entry point."""

import pytest
import torch
from torch import nn

from wandapp.masks import SparsityPattern
from wandapp.methods.sparsegpt import SparseGPT, _share, sparsegpt_prune
from wandapp.methods.stats import Hessian


def inputs(cols, tokens=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(tokens, cols, generator=g) * torch.linspace(0.2, 3, cols)


def test_share_spreads_an_exact_count_over_the_blocks_in_proportion():
    count, cols, spans = 1000, 300, [(0, 128), (128, 256), (256, 300)]
    parts = [_share(count, i1, i2, cols) for i1, i2 in spans]
    assert sum(parts) == count
    for (i1, i2), part in zip(spans, parts):
        assert abs(part - count * (i2 - i1) / cols) < 1


@pytest.mark.parametrize("ratio", [0.0, 0.5])
def test_exact_counts_per_segment_override_the_ratio(ratio):
    W = torch.randn(48, 300, generator=torch.Generator().manual_seed(1))
    x = inputs(300)
    _, mask = sparsegpt_prune(W, 2 / 256 * x.T @ x, SparsityPattern(ratio=ratio), segments=[16, 32],
                              counts=[1001, 7000])
    assert (mask[:16].sum().item(), mask[16:].sum().item()) == (1001, 7000)


def test_prune_linear_writes_the_updated_pruned_weight():
    torch.manual_seed(0)
    pattern = SparsityPattern.parse("0.5")
    lin = nn.Linear(192, 24, bias=False)
    stat = Hessian(lin)
    stat.add(inputs(192))
    method = SparseGPT(pattern, blocksize=64, percdamp=0.1)  # not the defaults: both must reach sparsegpt_prune
    W, mask = sparsegpt_prune(lin.weight, stat.H, pattern, 64, 0.1)
    default_W, _ = sparsegpt_prune(lin.weight, stat.H, pattern)
    assert not torch.allclose(W, default_W)
    method.prune_linear(lin, stat)
    assert torch.equal(lin.weight.data, W.masked_fill(mask, 0.0))
    assert torch.equal(lin.weight.data == 0, mask)


def test_prune_linear_takes_a_profiles_exact_count():
    lin = nn.Linear(192, 24, bias=False)
    stat = Hessian(lin)
    stat.add(inputs(192))
    SparseGPT(SparsityPattern.parse("0.5")).prune_linear(lin, stat, SparsityPattern(ratio=0.3, count=1234))
    assert (lin.weight == 0).sum().item() == 1234
