"""What the one-shot methods share: one pass of statistics over the dense block, then score, mask, update."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn

from ..masks import SparsityPattern, apply_mask
from ..walker import BlockContext


@dataclass
class LayerwiseMethod:
    """Prunes the linears of a block independently from statistics of one dense pass (Wanda's protocol:
    all seven linears see the dense block's inputs)."""

    pattern: SparsityPattern
    name: ClassVar[str] = "base"
    stat: ClassVar[type | None] = None  # statistic class, None when the score needs no inputs

    def hyperparameters(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "pattern"}

    @torch.no_grad()
    def prune_block(self, ctx: BlockContext) -> None:
        stats = ctx.collect(self.stat, list(ctx.linears)) if self.stat else {}
        for name, linear in ctx.linears.items():
            self.prune_linear(linear, stats.get(name), ctx.pattern_for(name, self.pattern))

    def prune_linear(self, linear: nn.Linear, stat, pattern: SparsityPattern) -> None:
        mask = pattern.mask(self.score(linear, stat))
        apply_mask(linear.weight.data, mask)

    def score(self, linear: nn.Linear, stat) -> torch.Tensor:
        raise NotImplementedError
