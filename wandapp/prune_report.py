"""Measured sparsity of a pruned model, per linear and overall, for prune_report.json."""

from __future__ import annotations

from .adapter import DecoderAdapter
from .errors import WandappError
from .masks import SparsityPattern, follows_nm


def sparsity_summary(model, pattern: SparsityPattern) -> dict:
    """Zeros per pruned linear and overall; raises if an N:M pattern is not exactly met (a bug, never silent)."""
    per_layer, zeros, total = {}, 0, 0
    for name, linear in DecoderAdapter.from_model(model).all_linears().items():
        w = linear.weight.detach()
        z = int((w == 0).sum())
        per_layer[name] = round(z / w.numel(), 6)
        zeros, total = zeros + z, total + w.numel()
        if pattern.is_nm and not follows_nm(w, pattern.n, pattern.m):
            raise WandappError(f"{name} does not follow {pattern.label} after pruning")
    return {"sparsity_overall": zeros / total, "sparsity_per_layer": per_layer}
