"""SparseGPT (Frantar & Alistarh 2023): OBS-style pruning with the inverse-Hessian weight update.

Faithful to the reference code (damping 0.01 of the mean diagonal, blocks of 128 columns, lazy batched updates;
unstructured masks chosen per 128-column block, N:M masks chosen on the already-updated weights), with one fix:
the reference prunes every score <= the k-th, i.e. k+1 weights plus ties; here exactly k are pruned.

Speed, with the same masks and updates (up to floating-point order):
- Every row's update depends only on that row's own errors, so linears that read the same input (q, k, v; gate,
  up) are pruned as one row-stacked matrix: one factorisation of their shared Hessian and one column loop. The
  unstructured mask is still chosen per linear (`segments`); the N:M mask is per row anyway.
- The column loop runs 4-6 small kernels per column; on CUDA it is recorded once per matrix as a CUDA graph and
  replayed for every 128-column block, so the loop costs the kernels' time, not their launches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import torch

from ..masks import SparsityPattern, apply_mask
from .base import LayerwiseMethod, hyperparameter
from .stats import Hessian

log = logging.getLogger(__name__)


def _inverse_hessian_factor(H: torch.Tensor, percdamp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp*I)^-1; damping grows tenfold if H is not positive definite."""
    mean_diag = torch.mean(torch.diag(H))
    for attempt in range(4):
        damp = percdamp * 10**attempt * mean_diag
        try:
            L = torch.linalg.cholesky(H + damp * torch.eye(H.shape[0], device=H.device, dtype=H.dtype))
            return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
        except torch.linalg.LinAlgError:
            log.warning("Hessian not positive definite at damping %.3g; retrying with more", percdamp * 10**attempt)
    raise torch.linalg.LinAlgError("Hessian not positive definite even with 1000x damping")


def _prune_columns(W1: torch.Tensor, Hinv1: torch.Tensor, M1: torch.Tensor, Err1: torch.Tensor,
                   pattern: SparsityPattern) -> None:
    """The sequential loop over one block of columns, in place. On return W1[:, i] holds column i as it was when
    it was pruned (before its own update, so Q1 = W1 masked), M1 the mask (N:M groups chosen here; an
    unstructured mask comes in chosen), Err1 the scaled errors. The same values as the reference's loop: its
    `w - q` is `where(mask, w, 0)` exactly, and its rank-1 product of K=1 is the elementwise product."""
    width = W1.shape[1]
    if pattern.is_nm:
        m, drop_n = pattern.m, pattern.m - pattern.n
        d2 = torch.diag(Hinv1).square()
    for i in range(width):
        if pattern.is_nm and i % m == 0:
            g = W1[:, i : i + m].square() / d2[i : i + m]
            M1[:, i : i + m].scatter_(1, torch.sort(g, dim=1, stable=True).indices[:, :drop_n], True)
        err = torch.where(M1[:, i], W1[:, i], 0.0) / Hinv1[i, i]
        Err1[:, i] = err
        if i + 1 < width:
            W1[:, i + 1 :].sub_(err.unsqueeze(1) * Hinv1[i, i + 1 :])


class _ColumnLoop:
    """Runs _prune_columns on one block of columns. With `graph` (CUDA only), the loop over a full-width block is
    recorded once as a CUDA graph on static buffers and replayed for every later block of that width: the same
    kernels on the same values, without ~700 kernel launches per block. If recording fails, it runs eagerly."""

    def __init__(self, pattern: SparsityPattern, width: int, graph: bool):
        self.pattern, self.width, self.graph_wanted = pattern, width, graph
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: tuple[torch.Tensor, ...] = ()
        self.mode = "eager"

    def __call__(self, W1: torch.Tensor, Hinv1: torch.Tensor, M1: torch.Tensor):
        """Returns (W1, M1, Err1) after the loop; they may be static buffers, valid until the next call."""
        if self.graph_wanted and W1.is_cuda and W1.shape[1] == self.width and self.graph is None:
            self._record(W1, Hinv1, M1)
        if self.graph is not None and W1.shape[1] == self.width:
            for static, value in zip(self.static, (W1, Hinv1, M1)):
                static.copy_(value)
            self.graph.replay()
            return self.static[0], self.static[2], self.static[3]
        Err1 = torch.empty_like(W1)
        _prune_columns(W1, Hinv1, M1, Err1, self.pattern)
        return W1, M1, Err1

    def _record(self, W1, Hinv1, M1) -> None:
        self.graph_wanted = False  # one attempt per matrix
        static = (W1.clone(), Hinv1.clone(), M1.clone(), torch.empty_like(W1))
        device = W1.device
        try:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):  # warm-up outside the graph, as torch.cuda.graphs asks
                _prune_columns(*static, self.pattern)
            torch.cuda.current_stream(device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                _prune_columns(*static, self.pattern)
        except Exception as e:  # pragma: no cover - CUDA only
            log.warning("SparseGPT: CUDA graph recording failed (%s); running the column loop eagerly", e)
            return
        self.graph, self.static, self.mode = graph, static, "cuda-graph"


def _choose_unstructured(W1: torch.Tensor, d: torch.Tensor, ratio: float, segments: Sequence[int],
                         M1: torch.Tensor) -> None:
    """The reference's per-block mask: in each linear's rows (`segments`) of this 128-column block, prune the
    int(rows * width * ratio) lowest w^2 / d^2."""
    start = 0
    for rows in segments:
        score = (W1[start : start + rows].square() / d.square().unsqueeze(0)).flatten()
        k = int(score.numel() * ratio)
        M1[start : start + rows].view(-1)[torch.sort(score, stable=True).indices[:k]] = True
        start += rows


@torch.no_grad()
def sparsegpt_prune(weight: torch.Tensor, H: torch.Tensor, pattern: SparsityPattern,
                    blocksize: int = 128, percdamp: float = 0.01, segments: Sequence[int] | None = None,
                    graph: bool = True, info: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (updated float32 (float64 for float64) weight, prune mask) for `weight` (rows, cols) given its input Hessian.

    `weight` may stack the rows of several linears that read the same input; `segments` gives their row counts
    (default: one linear), so each one's unstructured mask is chosen as if it were pruned alone.
    `graph`: on CUDA, replay the column loop as a CUDA graph (same kernels; False runs it eagerly).
    `info`, if given, receives how the loop ran ('column_loop': 'cuda-graph' or 'eager')."""
    W = weight.detach().to(torch.promote_types(weight.dtype, torch.float32), copy=True)  # float64 stays
    H = H.clone()
    rows, cols = W.shape
    segments = list(segments) if segments is not None else [rows]
    if sum(segments) != rows:
        raise ValueError(f"segments {segments} do not add up to {rows} rows")
    if pattern.is_nm and blocksize % pattern.m:
        raise ValueError(f"blocksize {blocksize} must be a multiple of M={pattern.m}")
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    Hinv = _inverse_hessian_factor(H, percdamp)
    del H
    mask = torch.zeros_like(W, dtype=torch.bool)
    loop = _ColumnLoop(pattern, blocksize, graph)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Hinv1 = Hinv[i1:i2, i1:i2]
        M1 = torch.zeros_like(W1, dtype=torch.bool)
        if not pattern.is_nm and pattern.ratio > 0:
            _choose_unstructured(W1, torch.diag(Hinv1), pattern.ratio, segments, M1)
        W1, M1, Err1 = loop(W1, Hinv1, M1)
        W[:, i1:i2] = W1.masked_fill(M1, 0.0)
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
        mask[:, i1:i2] = M1
    if info is not None:
        info["column_loop"] = loop.mode
    return W, mask


@dataclass
class SparseGPT(LayerwiseMethod):
    name = "sparsegpt"
    stat = Hessian
    blocksize: int = hyperparameter(128, "columns per lazy-update block", minimum=1)
    percdamp: float = hyperparameter(0.01, "Hessian damping as a fraction of its mean diagonal", exclusive_minimum=0)

    @torch.no_grad()
    def prune_block(self, ctx) -> None:
        """All linears from the dense block's Hessians (as the reference); linears sharing one Hessian object
        (one input) are pruned as one row-stacked matrix."""
        stats = ctx.collect(self.stat, list(ctx.linears))
        groups: dict[int, list[str]] = {}
        for name in ctx.linears:
            groups.setdefault(id(stats[name]), []).append(name)
        modes: set[str] = set()
        info: dict = {}
        for names in groups.values():
            linears = [ctx.linears[n] for n in names]
            weight = linears[0].weight if len(linears) == 1 else torch.cat([lin.weight for lin in linears])
            W, mask = sparsegpt_prune(weight, stats[names[0]].H, self.pattern, self.blocksize, self.percdamp,
                                      segments=[lin.out_features for lin in linears], info=info)
            modes.add(info["column_loop"])
            del weight
            start = 0
            for lin in linears:
                rows = slice(start, start + lin.out_features)
                lin.weight.data.copy_(W[rows].to(lin.weight.dtype))
                apply_mask(lin.weight.data, mask[rows])
                start += lin.out_features
            del W, mask
        ctx.log["column_loop"] = "+".join(sorted(modes))

    def prune_linear(self, linear, stat: Hessian) -> None:
        W, mask = sparsegpt_prune(linear.weight, stat.H, self.pattern, self.blocksize, self.percdamp)
        linear.weight.data.copy_(W.to(linear.weight.dtype))
        apply_mask(linear.weight.data, mask)
