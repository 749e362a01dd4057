"""Input statistics of a linear layer, accumulated over calibration tokens in float32."""

from __future__ import annotations

import torch
from torch import nn


def _tokens(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1]).float()


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
    """SparseGPT's H = (2/N) * sum over tokens of x x^T, N counted in sequences (as the reference code)."""

    def __init__(self, linear: nn.Linear):
        n = linear.in_features
        self.H = torch.zeros(n, n, dtype=torch.float32, device=linear.weight.device)
        self.nsamples = 0

    def add(self, x: torch.Tensor) -> None:
        b = x.shape[0] if x.dim() == 3 else 1
        t = _tokens(x)
        self.H *= self.nsamples / (self.nsamples + b)
        self.nsamples += b
        t = t * (2 / self.nsamples) ** 0.5
        self.H.addmm_(t.T, t)
