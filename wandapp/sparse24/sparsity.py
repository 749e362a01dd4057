"""Random 2:4 weights for timing; the 2:4 check and mask are the pruning core's (wandapp.masks)."""

from __future__ import annotations

import torch

from ..masks import apply_mask, follows_nm, nm_mask


def is_2of4(weight: torch.Tensor) -> bool:
    """True when every group of 4 consecutive inputs of each row holds at most 2 non-zeros."""
    return follows_nm(weight, 2, 4)


def random_2of4_(weight: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill `weight` in place with N(0, 0.02) values, then zero the 2 smallest |w| of each group of 4 (+0.0)."""
    weight.normal_(0.0, 0.02, generator=generator)
    apply_mask(weight, nm_mask(weight.abs(), 2, 4))
    return weight
