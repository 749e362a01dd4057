"""Random 2:4 weights for timing; the 2:4 mask is the pruning core's, and so is the check (masks.follows_nm)."""

from __future__ import annotations

import torch

from ..masks import apply_mask, nm_mask


def random_2of4_(weight: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill `weight` in place with N(0, 0.02) values, then zero the 2 smallest |w| of each group of 4 (+0.0)."""
    weight.normal_(0.0, 0.02, generator=generator)
    apply_mask(weight, nm_mask(weight.abs(), 2, 4))
    return weight
