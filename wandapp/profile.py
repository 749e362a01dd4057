"""Layer-wise sparsity profiles for unstructured pruning: uniform (every block at the target) or OWL.

OWL (Yin et al. 2024, "Outlier Weighed Layerwise sparsity"): on the dense model, block i's outlier share D_i is the
fraction of Wanda scores |W_ij| * ||X_j|| over its seven linears that exceed M times their mean (M = 5). The shares
map linearly onto [0, 2 * lambda] (lambda = 0.08), x_i = (D_i - min D) / (max D - min D) * 2 lambda, and block i
gets the sparsity s_i = s - (x_i - mean x): more outliers, fewer pruned weights, within s +- lambda. The mean is
weighted by the blocks' sizes (OWL's plain mean; equal for equal blocks), so the profile's mean is s.

Exact counts: the whole model prunes K = floor(s * P + 1/2) of its P prunable weights. Each linear's ideal share
s_i * size is rounded down and the K - (sum of those) weights left over go, one each, to the linears with the
largest fractional parts (ties to the earlier linear). Each linear then prunes exactly its count, compared per
output row (masks.count_mask), so the measured sparsity over all pruned weights is K / P, the target to within
half a weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .errors import WandappError
from .masks import SparsityPattern
from .methods.stats import ColumnNorm
from .methods.wanda import wanda_score
from .walker import BlockContext, walk_blocks

PROFILES = ("uniform", "owl")
OWL_M, OWL_LAMBDA = 5.0, 0.08


def outlier_share(scores: list[torch.Tensor], m: float) -> float:
    """Fraction of all entries of `scores` (one block's linears) above m times their mean."""
    flat = torch.cat([s.flatten().float() for s in scores])
    return int((flat > m * flat.mean()).sum()) / flat.numel()


def owl_ratios(shares: list[float], target: float, lam: float, sizes: list[int]) -> list[float]:
    """Per-block sparsities from the outlier shares; their mean weighted by `sizes` is `target`."""
    d = torch.tensor(shares, dtype=torch.float64)
    span = float(d.max() - d.min())
    x = (d - d.min()) / span * 2 * lam if span > 0 else torch.zeros_like(d)
    w = torch.tensor(sizes, dtype=torch.float64)
    ratios = (target - (x - (x * w).sum() / w.sum())).tolist()
    if min(ratios) < 0 or max(ratios) >= 1:
        raise WandappError(f"OWL with lambda {lam:g} takes a block's sparsity outside [0, 1) at target {target:g}; "
                           f"use a smaller --owl-lambda")
    return ratios


def exact_counts(ratios: list[float], sizes: list[dict[str, int]], target: float) -> list[dict[str, int]]:
    """Weights to prune per block and linear: ideal shares ratio * size, rounded so that they sum to
    floor(target * total + 1/2) (largest remainders get the leftover weights)."""
    flat = [(b, name, ratios[b] * n) for b, block in enumerate(sizes) for name, n in block.items()]
    total = sum(n for block in sizes for n in block.values())
    counts = {(b, name): math.floor(ideal) for b, name, ideal in flat}
    left = math.floor(target * total + 0.5) - sum(counts.values())
    by_remainder = sorted(range(len(flat)), key=lambda i: -(flat[i][2] - math.floor(flat[i][2])))
    step = 1 if left >= 0 else -1
    order = by_remainder if left >= 0 else by_remainder[::-1]
    for i in order[: abs(left)]:
        counts[flat[i][:2]] += step
    return [{name: counts[(b, name)] for name in block} for b, block in enumerate(sizes)]


@dataclass
class OwlProfile:
    """Wraps a method: before the walk, OWL's per-block ratios from the dense model; during it, each linear's
    exact count as the block's patterns. Name, hyperparameters and the rest are the method's."""

    method: object
    pattern: SparsityPattern
    m: float = OWL_M
    lam: float = OWL_LAMBDA
    shares: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    counts: list[dict[str, int]] = field(default_factory=list)

    def __getattr__(self, attr):  # name, hyperparameters(), presets, ...: the method's
        if attr == "method":
            raise AttributeError(attr)
        return getattr(self.method, attr)

    def prepare(self, model, input_ids, device, offload=True, store=None, micro_batch=4) -> None:
        if hasattr(self.method, "prepare"):
            self.method.prepare(model, input_ids, device, offload=offload, store=store, micro_batch=micro_batch)
        sizes: list[dict[str, int]] = []

        def visit(ctx: BlockContext) -> None:
            stats = ctx.collect(ColumnNorm, list(ctx.linears))
            self.shares.append(outlier_share(
                [wanda_score(lin.weight, stats[n].norm()) for n, lin in ctx.linears.items()], self.m))
            sizes.append({n: lin.weight.numel() for n, lin in ctx.linears.items()})

        self.shares.clear()
        walk_blocks(model, input_ids, visit, device, offload, store, micro_batch, desc="OWL outlier shares")
        self.ratios = owl_ratios(self.shares, self.pattern.ratio, self.lam, [sum(s.values()) for s in sizes])
        self.counts = exact_counts(self.ratios, sizes, self.pattern.ratio)

    def prune_block(self, ctx: BlockContext) -> None:
        counts = self.counts[ctx.index]
        ratio = self.ratios[ctx.index]
        ctx.patterns = {name: SparsityPattern(ratio=ratio, count=counts[name]) for name in ctx.linears}
        self.method.prune_block(ctx)

    def report(self) -> dict:
        return {"name": "owl", "M": self.m, "lambda": self.lam, "outlier_share": [round(s, 6) for s in self.shares],
                "block_ratios": [round(r, 6) for r in self.ratios],
                "block_counts": [sum(c.values()) for c in self.counts]}


def with_profile(method, pattern: SparsityPattern, profile: str = "uniform", owl_m: float | None = None,
                 owl_lambda: float | None = None):
    """The method itself (uniform) or wrapped in the profile; bad combinations are one-line errors."""
    if profile not in PROFILES:
        raise WandappError(f"unknown sparsity profile {profile!r}; choose one of {', '.join(PROFILES)}")
    if profile == "uniform":
        return method
    if pattern.is_nm:
        raise WandappError(f"the owl profile sets unstructured per-block ratios; it cannot apply to the N:M pattern "
                           f"{pattern.label} (use an unstructured sparsity such as 0.5)")
    m = OWL_M if owl_m is None else owl_m
    lam = OWL_LAMBDA if owl_lambda is None else owl_lambda
    if m <= 0 or lam < 0:
        raise WandappError(f"OWL needs M > 0 and lambda >= 0; got M={m:g}, lambda={lam:g}")
    return OwlProfile(method, pattern, m, lam)


def profile_report(method) -> dict:
    """What prune_report.json records of the profile."""
    return method.report() if isinstance(method, OwlProfile) else {"name": "uniform"}
