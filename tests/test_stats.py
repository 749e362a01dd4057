"""Input statistics (wandapp/methods/stats.py) against direct float64 computations."""

import pytest
import torch
from torch import nn

from wandapp.methods.stats import ColumnNorm, Hessian


def test_column_norm_of_16_bit_inputs_accumulates_in_float32():
    # x^2 of these fp16 tokens overflows fp16 (65504): the norm and its square must be taken in float32
    lin = nn.Linear(8, 4).half()
    x = torch.full((2, 32, 8), 100.0, dtype=torch.float16)
    x[1] *= 2
    stat = ColumnNorm(lin)
    stat.add(x)
    expected = x.double().reshape(-1, 8).square().sum(0).sqrt()
    assert stat.sq.dtype == torch.float32
    assert torch.allclose(stat.norm().double(), expected, rtol=1e-6)
    assert (stat.nsamples, stat.ntokens) == (2, 64)


def test_a_2d_input_is_one_sample():
    torch.manual_seed(0)
    lin = nn.Linear(6, 3)
    x2, x3 = torch.randn(10, 6), torch.randn(3, 5, 6)
    norm = ColumnNorm(lin)
    norm.add(x2)
    norm.add(x3)
    assert (norm.nsamples, norm.ntokens) == (4, 25)
    assert torch.allclose(norm.norm("per-sample"), norm.norm() / 2)
    stat = Hessian(lin)
    stat.add(x2)  # (tokens, features): one sequence
    stat.add(x3)  # (batch, tokens, features): three sequences
    assert stat.nsamples == 4
    t = torch.cat([x2, x3.reshape(-1, 6)]).double()
    assert torch.allclose(stat.H.double(), 2 / 4 * t.T @ t, atol=1e-5)


def test_statistics_live_on_the_linear_device():
    # "meta" stands in for a GPU: a sum made on the default device would leave the statistics on the CPU
    lin = nn.Linear(8, 4, device="meta")
    x = torch.empty(2, 3, 8, device="meta")
    norm, hessian = ColumnNorm(lin), Hessian(lin)
    norm.add(x)
    hessian.add(x)
    assert norm.norm().device == lin.weight.device
    assert hessian.H.device == lin.weight.device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_float32_hessian_on_cuda_is_not_tf32(dtype):
    # only 16-bit inputs are exact in TF32 (they go through it); a float32 product through TF32 units is off by
    # ~1e-3 relative. Either way H is the float32 product.
    torch.manual_seed(0)
    x = torch.randn(4, 512, 256, device="cuda").to(dtype)
    stat = Hessian(nn.Linear(256, 8, device="cuda"))
    stat.add(x)
    t = x.reshape(-1, 256).double()
    expected = 2 / 4 * t.T @ t
    assert (stat.H.double() - expected).abs().max() / expected.abs().max() < 1e-5
