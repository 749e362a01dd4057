"""SparseGPT's parts: damping retries, exact counts (a sparsity profile's), ties, and the one-linear entry point."""

import pytest
import torch
from torch import nn

from wandapp.masks import SparsityPattern
from wandapp.methods.sparsegpt import SparseGPT, _inverse_hessian_factor, _share, sparsegpt_prune
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


def test_inverse_hessian_factor_is_the_damped_inverse():
    x = inputs(40, tokens=64).double()
    H = 2 / 64 * x.T @ x
    U = _inverse_hessian_factor(H, 0.5)  # large damping: its value, in float64, shows in the factor
    expected = torch.linalg.inv(H + 0.5 * torch.diag(H).mean() * torch.eye(40, dtype=torch.float64))
    assert U.dtype == torch.float64
    torch.testing.assert_close(U.T @ U, expected, rtol=1e-12, atol=0)


def test_damping_grows_tenfold_until_the_hessian_is_positive_definite(caplog):
    H = torch.diag(torch.tensor([1.0, 1.0, 1.0, -0.5], dtype=torch.float64))  # mean diagonal 0.625
    U = _inverse_hessian_factor(H, 0.01)  # 0.1 * 0.625 < 0.5 < 1 * 0.625: the third attempt
    expected = torch.linalg.inv(H + 1.0 * 0.625 * torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(U.T @ U, expected, rtol=1e-12, atol=0)
    assert caplog.messages == [f"Hessian not positive definite at damping {d}; retrying with more" for d in (0.01, 0.1)]


def test_damping_gives_up_after_1000x():
    H = torch.diag(torch.tensor([1.0, 1.0, 1.0, 1.0, -3.0], dtype=torch.float64))  # 10000x would pass, 1000x not
    with pytest.raises(torch.linalg.LinAlgError) as raised:
        _inverse_hessian_factor(H, 0.01)
    assert str(raised.value) == "Hessian not positive definite even with 1000x damping"


def test_diagonal_hessian_nm_is_magnitude_pruning_with_ties_to_the_lower_column():
    W = torch.randint(1, 4, (8, 256), generator=torch.Generator().manual_seed(0)).double()
    _, mask = sparsegpt_prune(W, torch.eye(256, dtype=torch.float64), SparsityPattern.parse("2:4"))
    for r, g in [(r, g) for r in range(8) for g in range(0, 256, 4)]:
        group = W[r, g : g + 4].tolist()
        lowest = sorted(range(4), key=lambda j: group[j])[:2]
        assert sorted(torch.nonzero(mask[r, g : g + 4]).flatten().tolist()) == sorted(lowest)


def test_diagonal_hessian_is_magnitude_pruning_per_block_with_ties_to_the_lower_index():
    # A diagonal H has no cross-column updates: each 128-column block prunes its lowest w^2 (d is constant);
    # values in {1, 2, 3} tie a lot, and ties go to the lower row-major index.
    W = torch.randint(1, 4, (8, 256), generator=torch.Generator().manual_seed(0)).double()
    _, mask = sparsegpt_prune(W, torch.eye(256, dtype=torch.float64), SparsityPattern.parse("0.5"))
    for i1 in (0, 128):
        block = W[:, i1 : i1 + 128].reshape(-1).tolist()
        lowest = sorted(range(len(block)), key=lambda j: block[j])[: len(block) // 2]
        expected = torch.zeros(len(block), dtype=torch.bool)
        expected[lowest] = True
        assert torch.equal(mask[:, i1 : i1 + 128].reshape(-1), expected)


def test_the_cpu_column_loop_never_tries_a_cuda_graph(caplog):
    # graph=True is the default; on the CPU the loop must run eagerly without a failed-recording warning
    W = torch.randn(16, 256, generator=torch.Generator().manual_seed(0))
    x = inputs(256)
    info = {}
    sparsegpt_prune(W, 2 / 256 * x.T @ x, SparsityPattern.parse("0.5"), info=info)
    assert info == {"column_loop": "eager"}
    assert caplog.records == []
