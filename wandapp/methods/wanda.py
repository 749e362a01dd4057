"""Wanda: score |W_ij| * ||X_j||_2, compared per output row (or per N:M group)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import LayerwiseMethod
from .stats import ColumnNorm


def wanda_score(weight: torch.Tensor, column_norm: torch.Tensor) -> torch.Tensor:
    return weight.detach().abs().float() * column_norm.to(weight.device).unsqueeze(0)


@dataclass
class Wanda(LayerwiseMethod):
    name = "wanda"
    stat = ColumnNorm

    def score(self, linear, stat: ColumnNorm):
        return wanda_score(linear.weight, stat.norm())
