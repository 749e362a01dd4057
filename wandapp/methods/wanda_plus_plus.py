"""Wanda++ (arXiv 2503.04992): regional gradient score (RGS) and regional optimization (RO), block by block.

Per block, following ../shared/reference/method.md (its section-5 readings where the paper is ambiguous):
  G   = RMS over the N calibration samples of d||f(X_n)||_2 / dW, on the DENSE block, once per block (that pass
        also keeps the dense outputs as RO's targets)
  S   = (alpha * G + ||X_j||_2) * |W|, compared per output row or per N:M group (Wanda's groups)
  K rounds of: RGS-prune the 7 linears in forward order, each with input norms over all N samples measured on the
  partly pruned block; then RMSprop over M random samples against the dense block's outputs (weights not masked,
  optimizer state kept across rounds). A final RGS prune restores exact sparsity.
Ablations: ro=False is "Wanda++ RGS" (one RGS prune); rgs=False is "Wanda++ RO" (Wanda score inside the loop).
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn

from ..masks import SparsityPattern, apply_mask
from ..walker import BlockContext
from .rmsprop import rmsprop
from .stats import ColumnNorm

PRECISIONS = ("bf16", "bf16-autocast", "tf32", "fp32")
X_NORMS = ("l2", "per-sample", "rms")
G_NORMS = ("none", "mean")
LOOP_NORMS = ("all", "ro")


@contextlib.contextmanager
def compute_precision(device: torch.device, precision: str):
    """fp32: exact; tf32: float32 weights, TF32 matrix units (CUDA); bf16-autocast: autocast matmuls to bfloat16
    (CUDA). bf16 needs no context: a bfloat16 copy of the block computes (see WandaPlusPlus.compute_copy).

    On the CPU every choice runs in float32."""
    if device.type != "cuda" or precision in ("fp32", "bf16"):
        yield
    elif precision == "tf32":
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
    else:
        # No cast cache: weights are masked and updated in place, and a cached bf16 copy would go stale.
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            yield


@dataclass
class WandaPlusPlus:
    pattern: SparsityPattern
    alpha: float = 100.0  # weight of the regional gradient against the activation norm
    rgs: bool = True  # False: Wanda score inside the RO loop (the "Wanda++ RO" ablation)
    ro: bool = True  # False: one RGS prune, no optimisation (the "Wanda++ RGS" ablation)
    ro_rounds: int = 5  # K
    ro_samples: int = 32  # M, drawn afresh each round
    ro_lr: float = 3e-7
    ro_batch: int = 1  # samples per RMSprop step (the paper's code: 1)
    ro_epochs: int = 1  # passes over the M samples per round
    x_norm: str = "l2"  # ||X_j||: 'l2' over all tokens (paper), 'per-sample' (/sqrt N), 'rms' (/sqrt(N*T))
    g_norm: str = "none"  # 'none' (paper) or 'mean': rescale G per linear to the mean of ||X_j||
    loop_norms: str = "all"  # in-loop RGS norms over 'all' N samples (method.md reading) or the round's 'ro' M
    precision: str = "bf16"  # of the gradient, RO and statistics passes on CUDA; see compute_copy
    seed: int = 0
    track_error: bool = False  # log the dense-vs-sparse block error around each RO round (costs forwards)

    family: ClassVar[str] = "wanda++"

    def __post_init__(self):
        for key, allowed in (("precision", PRECISIONS), ("x_norm", X_NORMS), ("g_norm", G_NORMS),
                             ("loop_norms", LOOP_NORMS)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {', '.join(allowed)}; got {getattr(self, key)!r}")
        if min(self.ro_rounds, self.ro_samples, self.ro_batch, self.ro_epochs) < 1 and self.ro:
            raise ValueError("ro_rounds, ro_samples, ro_batch and ro_epochs must be >= 1")
        if self.ro and not self.ro_lr > 0:
            raise ValueError(f"ro_lr must be > 0; got {self.ro_lr:g}")
        if not self.alpha >= 0:
            raise ValueError(f"alpha must be >= 0; got {self.alpha:g}")

    @property
    def name(self) -> str:
        return "wanda++" if self.rgs and self.ro else ("wanda++-ro" if self.ro else "wanda++-rgs")

    def hyperparameters(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "pattern"}

    # ------------------------------------------------------------------ per block
    def prune_block(self, ctx: BlockContext) -> None:
        block, dtype = ctx.block, next(ctx.block.parameters()).dtype
        use_g = self.rgs and self.alpha != 0
        G = None
        with compute_precision(ctx.device, self.precision):
            if use_g or self.ro:
                block.float()  # float32 master weights: RO's small steps would vanish in 16-bit weights
            work = self.compute_copy(ctx)
            if use_g:
                G, targets = self.regional_gradient(ctx, work, keep_outputs=self.ro)
            elif self.ro:
                targets = ctx.outputs(block=work, dtype=torch.float32)
            if self.ro:
                self.optimise(ctx, work, G, targets)
                del targets
            del work
            block.to(dtype)
        # Final prune, in the stored dtype (outside autocast): exact sparsity on the weights as saved. Its pass
        # over all samples also yields the block's outputs, the next block's inputs.
        ctx.next_inputs = self.rgs_prune(ctx, G, outputs=True)

    def compute_copy(self, ctx: BlockContext) -> nn.Module:
        """The module that computes gradient, RO and statistics passes: on CUDA with precision bf16 a bfloat16
        copy of the float32 master block (weights and activations in bf16, no per-call casts; RMSprop updates
        the float32 master and refreshes the copy); otherwise the block itself."""
        if ctx.device.type == "cuda" and self.precision == "bf16":
            return copy.deepcopy(ctx.block).to(torch.bfloat16).requires_grad_(False)
        return ctx.block

    def regional_gradient(self, ctx: BlockContext, work: nn.Module, keep_outputs: bool = False):
        """RMS over samples of the per-sample gradient of ||block(X_n)||_2 for each linear weight; with
        `keep_outputs`, also the dense block's float32 outputs (RO's targets, so no dense copy is needed)."""
        weights = _trainable_linears(work, ctx.linears)
        acc = [torch.zeros_like(w, dtype=torch.float32) for w in weights]
        outputs = torch.empty(ctx.inputs.shape, dtype=torch.float32, device=ctx.inputs.device) if keep_outputs else None
        with torch.enable_grad():
            for n, x in enumerate(ctx.batches(size=1)):
                out = ctx.run(x, work).float()
                if outputs is not None:
                    outputs[n] = out[0].detach()
                for a, g in zip(acc, torch.autograd.grad(out.norm(), weights)):
                    a.addcmul_(g, g)
        work.requires_grad_(False)
        G = {name: (a / ctx.nsamples).sqrt_() for name, a in zip(ctx.linears, acc)}
        return G, outputs

    @torch.no_grad()
    def rgs_prune(self, ctx: BlockContext, G: dict[str, torch.Tensor] | None, work: nn.Module | None = None,
                  outputs: bool = False, samples: list[int] | None = None):
        """Prune the linears group by group in forward order; each group's input norms come from the block
        with the earlier groups already pruned (over all N samples, or `samples`: then rescaled to N samples,
        so alpha keeps its weight), measured on `work` (the block, or its compute copy, masked alike).
        Returns the block's outputs if asked."""
        measured = work if work is not None else ctx.block
        shadow = measured if measured is not ctx.block else None

        def prune_group(names, stats):
            for name in names:
                w = ctx.linears[name].weight
                mask = self.pattern.mask(self.score(w, stats[name], G and G[name], ctx.nsamples))
                apply_mask(w.data, mask)
                if shadow is not None:
                    apply_mask(shadow.get_submodule(name).weight.data, mask)

        return ctx.prune_in_order(ColumnNorm, prune_group, block=measured, outputs=outputs, samples=samples)

    def score(self, w: torch.Tensor, stat: ColumnNorm, g: torch.Tensor | None, nsamples: int) -> torch.Tensor:
        xn = stat.norm(self.x_norm).unsqueeze(0)
        if self.x_norm == "l2" and stat.nsamples != nsamples:  # norms over a subset, scaled to all N samples
            xn = xn * (nsamples / stat.nsamples) ** 0.5
        if g is None:
            return w.abs().float() * xn
        if self.g_norm == "mean":
            g = g * (xn.mean() / g.mean().clamp_min(1e-30))
        return (self.alpha * g + xn) * w.abs().float()

    def optimise(self, ctx: BlockContext, work: nn.Module, G, targets: torch.Tensor) -> None:
        """K rounds of RGS prune + RMSprop towards the dense block's outputs (`targets`) on M random samples.
        `work` computes; the optimiser updates the float32 master weights (and refreshes `work` from them)."""
        masters = [lin.weight for lin in ctx.linears.values()]
        copies = _trainable_linears(work, ctx.linears) if work is not ctx.block else None
        if copies is None:
            _trainable_linears(ctx.block, ctx.linears)
        opt = rmsprop(masters, self.ro_lr, copies=copies)
        rng = torch.Generator().manual_seed(self.seed * 1_000_003 + ctx.index)
        rounds = []
        for _ in range(self.ro_rounds):
            samples = torch.randperm(ctx.nsamples, generator=rng)[: self.ro_samples].tolist()
            self.rgs_prune(ctx, G, work, samples=samples if self.loop_norms == "ro" else None)
            round_targets = targets[samples].to(ctx.device)
            entry = {"error_pruned": self._error(ctx, work, samples, round_targets)} if self.track_error else {}
            entry["ro_loss"] = self._rmsprop_round(ctx, work, opt, samples, round_targets)
            if self.track_error:
                entry["error_ro"] = self._error(ctx, work, samples, round_targets)
            rounds.append(entry)
        ctx.block.requires_grad_(False)
        work.requires_grad_(False)
        ctx.log["ro_rounds"] = rounds
        del opt

    def _rmsprop_round(self, ctx, work, opt, samples, targets) -> float:
        total, b = 0.0, self.ro_batch
        with torch.enable_grad():
            for _ in range(self.ro_epochs):
                for s in range(0, len(samples), b):
                    x = ctx.inputs[samples[s : s + b]].to(ctx.device)
                    loss = (ctx.run(x, work).float() - targets[s : s + b]).square().sum()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    total += loss.item()
        return total / (len(samples) * self.ro_epochs)

    @torch.no_grad()
    def _error(self, ctx, work, samples, targets) -> float:
        """Mean over samples of the summed squared difference between the sparse and dense block outputs."""
        outs = torch.cat([ctx.run(x, work).float() for x in ctx.batches(samples)])
        return float((outs - targets).square().sum()) / len(samples)


def _trainable_linears(block: nn.Module, linears: dict[str, nn.Linear]) -> list[nn.Parameter]:
    """Only the seven linear weights of `block` take gradients (not the norms)."""
    block.requires_grad_(False)
    weights = [block.get_submodule(name).weight for name in linears]
    for w in weights:
        w.requires_grad_(True)
    return weights
