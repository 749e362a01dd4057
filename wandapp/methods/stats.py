"""Input statistics of a linear layer, accumulated over calibration tokens in float32."""

from __future__ import annotations

import contextlib

import torch
from torch import nn


class ColumnNorm:
    """||X_j||_2 over every calibration token seen: the L2 norm of each input feature (Wanda's activation norm)."""

    def __init__(self, linear: nn.Linear):
        self.sq = torch.zeros(linear.in_features, dtype=torch.float32, device=linear.weight.device)
        self.nsamples = 0
        self.ntokens = 0

    def add(self, x: torch.Tensor) -> None:
        t = x.reshape(-1, x.shape[-1])
        # float32 accumulation inside the reduction: no float32 copy of the batch, no fp16 overflow of x^2
        self.sq += torch.linalg.vector_norm(t, dim=0, dtype=torch.float32).square()
        self.nsamples += x.shape[0] if x.dim() == 3 else 1
        self.ntokens += t.shape[0]

    def norm(self, convention: str = "l2") -> torch.Tensor:
        """'l2': over all N*T tokens (the formula as written); 'per-sample': divided by sqrt(N) (Wanda's
        scaler_row); 'rms': divided by sqrt(N*T). Rankings are the same; only sums with other terms change."""
        scale = {"l2": 1, "per-sample": self.nsamples, "rms": self.ntokens}[convention]
        return (self.sq / max(scale, 1)).sqrt()


class Hessian:
    """SparseGPT's H = (2/N) * sum over tokens of x x^T, N counted in sequences (as the reference code).

    The sum is accumulated unscaled and scaled once when read (the reference rescales a running mean per batch;
    the same H up to floating-point order). 16-bit inputs on CUDA go through TF32 matrix units: a 16-bit value
    is exact in TF32 (10-bit mantissa, 8-bit exponent), products are exact and sums are float32, so this is the
    float32 product up to summation order, at tensor-core speed (the float32 product of the MLP input alone took
    about 1 s of a LLaMA-7B block)."""

    def __init__(self, linear: nn.Linear):
        n = linear.in_features
        self.sum = torch.zeros(n, n, dtype=torch.float32, device=linear.weight.device)
        self.nsamples = 0

    def add(self, x: torch.Tensor) -> None:
        self.nsamples += x.shape[0] if x.dim() == 3 else 1
        t = x.reshape(-1, x.shape[-1])
        exact_in_tf32 = t.is_cuda and t.dtype in (torch.float16, torch.bfloat16)
        t = t.float()
        with tf32_matmul(exact_in_tf32):
            self.sum.addmm_(t.T, t)

    @property
    def H(self) -> torch.Tensor:
        return self.sum * (2 / max(self.nsamples, 1))


@contextlib.contextmanager
def tf32_matmul(enabled: bool = True):
    """With `enabled`, CUDA float32 matmuls use TF32 matrix units inside the block; the old setting comes back."""
    if not enabled:
        yield
        return
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
