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
    if pattern.is_nm:
        for name, linear in DecoderAdapter.from_model(model).all_linears().items():
            if not follows_nm(linear.weight.detach(), pattern.n, pattern.m):
                raise WandappError(f"{name} does not follow {pattern.label} after pruning")
    exact = sparsity_by_linear(model, digits=None)
    return {"sparsity_overall": overall_sparsity(exact, model),
            "sparsity_per_layer": {name: round(value, 6) for name, value in exact.items()}}
