"""Pure mask selection for a SparsityPattern (wandapp/pattern.py). A mask is a bool tensor, True where a weight is
pruned.

Unstructured: every output row loses its int(in_features * ratio) lowest scores (Wanda's comparison group).
N:M: every group of M consecutive input channels of a row keeps its N highest scores (the layout of NVIDIA 2:4).
Exact count (a sparsity profile's allocation, see wandapp/profile.py): the matrix loses exactly `count` weights,
count // rows per output row and one more in the first count % rows rows.
Ties go to the lower column index (stable sort), so masks are deterministic.
"""

from __future__ import annotations

import torch

from .errors import WandappError
from .pattern import SparsityPattern  # noqa: F401  (re-exported: masks is where methods look for it)


def unstructured_mask(score: torch.Tensor, ratio: float) -> torch.Tensor:
    """Per output row, prune exactly int(cols * ratio) lowest-scored weights: the first k of a stable ascending
    sort (NaN last, ties to the lower column). On the CPU they come from the row's k-th value instead of a sort:
    the same mask in half the time there, but 0.8x the sort's speed on an H200 (benchmarks/pruning/mask_speed.py)."""
    rows, cols = score.shape
    k = int(cols * ratio)
    if not k or score.device.type != "cpu":
        mask = torch.zeros_like(score, dtype=torch.bool)
        return mask.scatter_(1, torch.sort(score, dim=1, stable=True).indices[:, :k], True) if k else mask
    kth = torch.kthvalue(score, k, dim=1, keepdim=True).values  # NaN orders last here too
    nan, few = score.isnan(), kth.isnan()  # few: fewer than k numbers in the row, so all go, then the first NaNs
    below = ~(score >= kth) & ~nan  # score < kth, or every number of the row if kth is NaN
    tied = (score == kth) | (nan & few)
    return below | (tied & (tied.cumsum(1, dtype=torch.int32) <= k - below.sum(1, keepdim=True, dtype=torch.int32)))


def count_mask(score: torch.Tensor, count: int) -> torch.Tensor:
    """Prune exactly `count` lowest-scored weights, compared per output row: count // rows in every row and one
    more in the first count % rows rows."""
    rows, cols = score.shape
    if not 0 <= count <= rows * cols:
        raise ValueError(f"cannot prune {count} of {rows * cols} weights")
    per_row = torch.full((rows, 1), count // rows, dtype=torch.long, device=score.device)
    per_row[: count % rows] += 1
    order = torch.sort(score, dim=1, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(cols, device=score.device).expand(rows, cols))
    return rank < per_row


def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """In each group of m consecutive input channels of a row, prune the m - n lowest scores."""
    rows, cols = score.shape
    if cols % m:
        raise WandappError(f"N:M sparsity needs in_features divisible by M; got {cols} and M={m}")
    # Each entry's place in a stable ascending sort of its group: how many of the group come before it (a lower
    # score, or an equal one at a lower column). From one comparison per pair of columns, on the group's columns
    # as strided views: a sort over groups of 4 (radix sort of the whole matrix) took 20 ms per 4096x11008 matrix
    # on an H100. Comparing each entry with its whole group, as before, took 4.6x this on the CPU and 1.7x on an H200
    # (2:4; 4:8 about even on the H200: benchmarks/pruning/mask_speed.py).
    column = score.reshape(rows, cols // m, m).unbind(-1)
    place = [torch.zeros(rows, cols // m, dtype=torch.uint8, device=score.device) for _ in range(m)]
    for i in range(m):
        for j in range(i + 1, m):
            place[j] += column[i] <= column[j]
            place[i] += column[j] < column[i]
    return (torch.stack(place, -1) < m - n).reshape(rows, cols)


def apply_mask(weight: torch.Tensor, mask: torch.Tensor) -> None:
    """Zero pruned weights in place. A masked write gives +0.0; multiplying by a mask would leave -0.0."""
    weight.masked_fill_(mask, 0.0)


def follows_nm(weight: torch.Tensor, n: int, m: int) -> bool:
    """True when every group of m consecutive inputs of every row has at most n non-zeros."""
    rows, cols = weight.shape
    if cols % m:
        return False
    return bool(((weight.reshape(rows, cols // m, m) != 0).sum(-1) <= n).all())


def sparsity(weight: torch.Tensor) -> float:
    return float((weight == 0).sum()) / weight.numel()
