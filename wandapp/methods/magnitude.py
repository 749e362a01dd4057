"""Magnitude pruning: score |W|, compared per output row (or per N:M group)."""

from __future__ import annotations

from dataclasses import dataclass

from .base import LayerwiseMethod


@dataclass
class Magnitude(LayerwiseMethod):
    name = "magnitude"
    reads_inputs = False  # |W| alone: the walk runs no calibration forward pass

    def score(self, linear, stat):
        return linear.weight.detach().abs().float()
