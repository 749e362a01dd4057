"""SparseGPT (Frantar & Alistarh 2023): OBS-style pruning with the inverse-Hessian weight update.

Faithful to the reference code (damping 0.01 of the mean diagonal, blocks of 128 columns, lazy batched updates;
unstructured masks chosen per 128-column block, N:M masks chosen on the already-updated weights), with one fix:
the reference prunes every score <= the k-th, i.e. k+1 weights plus ties; here exactly k are pruned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..masks import SparsityPattern, apply_mask
from .base import LayerwiseMethod, hyperparameter
from .stats import Hessian

log = logging.getLogger(__name__)


def _inverse_hessian_factor(H: torch.Tensor, percdamp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp*I)^-1; damping grows tenfold if H is not positive definite."""
    mean_diag = torch.mean(torch.diag(H))
    for attempt in range(4):
        damp = percdamp * 10**attempt * mean_diag
        try:
            L = torch.linalg.cholesky(H + damp * torch.eye(H.shape[0], device=H.device, dtype=H.dtype))
            return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
        except torch.linalg.LinAlgError:
            log.warning("Hessian not positive definite at damping %.3g; retrying with more", percdamp * 10**attempt)
    raise torch.linalg.LinAlgError("Hessian not positive definite even with 1000x damping")


@torch.no_grad()
def sparsegpt_prune(weight: torch.Tensor, H: torch.Tensor, pattern: SparsityPattern,
                    blocksize: int = 128, percdamp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (updated float32 weight, prune mask) for `weight` (rows, cols) given its input Hessian."""
    W = weight.detach().clone().float()
    H = H.clone()
    rows, cols = W.shape
    if pattern.is_nm and blocksize % pattern.m:
        raise ValueError(f"blocksize {blocksize} must be a multiple of M={pattern.m}")
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    Hinv = _inverse_hessian_factor(H, percdamp)
    mask = torch.zeros_like(W, dtype=torch.bool)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        d = torch.diag(Hinv1)
        M1 = torch.zeros_like(W1, dtype=torch.bool)
        if not pattern.is_nm and pattern.ratio > 0:
            score = (W1.square() / d.square().unsqueeze(0)).flatten()
            k = int(score.numel() * pattern.ratio)
            M1.view(-1)[torch.sort(score, stable=True).indices[:k]] = True
        for i in range(i2 - i1):
            if pattern.is_nm and i % pattern.m == 0:
                g = W1[:, i : i + pattern.m].square() / d[i : i + pattern.m].square().unsqueeze(0)
                drop = torch.sort(g, dim=1, stable=True).indices[:, : pattern.m - pattern.n]
                M1[:, i : i + pattern.m].scatter_(1, drop, True)
            w = W1[:, i]
            q = w.masked_fill(M1[:, i], 0.0)
            Q1[:, i] = q
            err = (w - q) / Hinv1[i, i]
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
        mask[:, i1:i2] = M1
    return W, mask


@dataclass
class SparseGPT(LayerwiseMethod):
    name = "sparsegpt"
    stat = Hessian
    blocksize: int = hyperparameter(128, "columns per lazy-update block", minimum=1)
    percdamp: float = hyperparameter(0.01, "Hessian damping as a fraction of its mean diagonal", exclusive_minimum=0)

    def prune_linear(self, linear, stat: Hessian) -> None:
        W, mask = sparsegpt_prune(linear.weight, stat.H, self.pattern, self.blocksize, self.percdamp)
        linear.weight.data.copy_(W.to(linear.weight.dtype))
        apply_mask(linear.weight.data, mask)
