"""Measured sparsity of a pruned model, per linear and overall (prune_report.json, lora_report.json)."""

from __future__ import annotations

from .adapter import DecoderAdapter
from .errors import WandappError
from .masks import SparsityPattern, follows_nm, sparsity


def sparsity_by_linear(model, digits: int | None = 6) -> dict[str, float]:
    """Fraction of exact zeros in each prunable linear."""
    out = {name: sparsity(lin.weight.detach()) for name, lin in DecoderAdapter.from_model(model).all_linears().items()}
    return out if digits is None else {name: round(value, digits) for name, value in out.items()}


def overall_sparsity(by_linear: dict[str, float], model) -> float:
    """Zeros over all prunable weights, from per-linear fractions (weighted by each linear's size)."""
    sizes = {n: lin.weight.numel() for n, lin in DecoderAdapter.from_model(model).all_linears().items()}
    return sum(by_linear[n] * sizes[n] for n in sizes) / sum(sizes.values())


def sparsity_summary(model, pattern: SparsityPattern) -> dict:
    """Zeros per pruned linear and overall; raises if an N:M pattern is not exactly met (a bug, never silent)."""
    tally = SparsityTally(pattern)
    for i, block in enumerate(DecoderAdapter.from_model(model).blocks):
        tally.add_block(i, block)
    return tally.summary()


class SparsityTally:
    """sparsity_summary gathered block by block (a streamed model never holds all its blocks at once)."""

    def __init__(self, pattern: SparsityPattern):
        self.pattern = pattern
        self.exact: dict[str, float] = {}
        self.sizes: dict[str, int] = {}

    def add_block(self, index: int, block) -> None:
        from .adapter import LINEAR_NAMES

        for n in LINEAR_NAMES:
            name, weight = f"layers.{index}.{n}", block.get_submodule(n).weight.detach()
            if self.pattern.is_nm and not follows_nm(weight, self.pattern.n, self.pattern.m):
                raise WandappError(f"{name} does not follow {self.pattern.label} after pruning")
            self.exact[name], self.sizes[name] = sparsity(weight), weight.numel()

    def summary(self) -> dict:
        overall = sum(self.exact[n] * self.sizes[n] for n in self.sizes) / sum(self.sizes.values())
        return {"sparsity_overall": overall,
                "sparsity_per_layer": {name: round(value, 6) for name, value in self.exact.items()}}
