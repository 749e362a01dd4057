"""2:4 checks and random 2:4 weights for timing (the pruning core's masks live elsewhere)."""

from __future__ import annotations

import torch


def is_2of4(weight: torch.Tensor) -> bool:
    """True when every group of 4 consecutive inputs of each row holds at least 2 zeros."""
    rows, cols = weight.shape
    if cols % 4:
        return False
    zeros = (weight.reshape(rows, cols // 4, 4) == 0).sum(-1)
    return bool((zeros >= 2).all())


def random_2of4_(weight: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill `weight` in place with N(0, 0.02) values, then zero the 2 smallest |w| of each group of 4 (+0.0)."""
    weight.normal_(0.0, 0.02, generator=generator)
    rows, cols = weight.shape
    groups = weight.view(rows, cols // 4, 4)
    drop = groups.abs().topk(2, dim=-1, largest=False).indices
    groups.scatter_(-1, drop, 0.0)
    return weight
