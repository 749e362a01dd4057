"""GBLM-Pruner (Das et al. 2023): Wanda's score plus a full-model gradient term.

    S_ij = |W_ij| * ||X_j|| + |W_ij| * G_ij,   G = sqrt(sum_n (scale * g_n)^2)   (l2, default)
                                               G = sum_n |scale * g_n|           (l1)

g_n is the gradient of sample n's language-model cross-entropy (labels = inputs, every token) with respect to the
weight, through the whole DENSE model; G is computed once, before the walk, then the walker prunes with Wanda's
protocol (statistics of one pass over the block's inputs, all seven linears from them). As GBLM's code, the scale
(default 100) is folded into G and there is no division by N; ||X_j|| is by default Wanda's `scaler_row` (the
full-token norm over sqrt(N), `--x-norm per-sample`), as GBLM's code; `l2` is the paper's formula as written.

The gradient pass is block-wise, like the walker: a forward sweep keeps each block's inputs for a chunk of samples,
then the blocks are walked backwards, each recomputed per sample with its weights requiring gradients, so only one
block is on the device at a time. The loss is scaled by `scale` before the backward (the same G; 16-bit gradients
keep their small values). The chunk's hidden states and the float32 sums live where the walker keeps calibration
states (`store`: the device by default, the CPU with --activations-on-cpu). LLaMA-7B at 128 x 2048, chunks of 16:
27 GB of sums and 9 GB of hidden states on the device, so the whole pass fits one 80 GB GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..adapter import DecoderAdapter
from ..masks import apply_mask
from ..offload import BlockShuttle
from ..staged import block_output
from ..walker import BlockContext, capture_block_inputs, module_device, on_device
from .base import LayerwiseMethod, hyperparameter
from .stats import ColumnNorm

GRADIENT_NORMS = ("l2", "l1")
X_NORMS = ("l2", "per-sample", "rms")  # the same choices as Wanda++'s x_norm (one flag serves both)


def lm_gradients(model: nn.Module, input_ids: torch.Tensor, device: torch.device, scale: float = 100.0,
                 norm: str = "l2", chunk: int = 16, offload: bool = True,
                 store: torch.device | None = None) -> list[dict[str, torch.Tensor]]:
    """Per block, per prunable linear: G aggregated over the rows of `input_ids` (N, T), float32.

    store: where the chunk's hidden states, the running sums and G live (default: the compute device)."""
    if norm not in GRADIENT_NORMS:
        raise ValueError(f"gradient_norm must be one of {', '.join(GRADIENT_NORMS)}; got {norm!r}")
    adapter = DecoderAdapter.from_model(model)
    store = torch.device(store) if store is not None else torch.device(device)
    blocks = list(adapter.blocks)
    sums = [[torch.zeros(lin.weight.shape, dtype=torch.float32, device=store)
             for lin in adapter.linears(block).values()] for block in blocks]
    for start in range(0, input_ids.shape[0], chunk):
        ids = input_ids[start : start + chunk]
        hidden, kwargs = capture_block_inputs(model, adapter, ids, device, store)
        inputs = _forward_sweep(blocks, hidden, kwargs, device, offload)  # inputs[i]: block i's; inputs[-1]: final
        grads = _head_gradients(adapter, inputs.pop(), ids, device, scale)
        _backward_sweep(blocks, adapter, inputs, grads, kwargs, device, offload, norm, sums)
    names = list(adapter.linears(blocks[0]))
    return [{n: (s.sqrt_() if norm == "l2" else s) for n, s in zip(names, block)} for block in sums]


def _moved(blocks, device, offload):
    """Yield each block on the device (shuttled like the walker's), then put it back where it was."""
    shuttle = BlockShuttle(device)
    for block in blocks:
        home = module_device(block)
        shuttled = offload and home is not None and home.type == "cpu" and shuttle.pinned
        shuttle.to_device(block) if shuttled else block.to(device)
        yield block
        if offload:
            shuttle.home(block) if shuttled else block.to(home)


@torch.no_grad()
def _forward_sweep(blocks, hidden, kwargs, device, offload) -> list[torch.Tensor]:
    inputs = [hidden]
    for block in _moved(blocks, device, offload):
        x = inputs[-1]
        inputs.append(torch.stack([block_output(block(x[n : n + 1].to(device), **kwargs))[0].to(x.device)
                                   for n in range(x.shape[0])]))
    return inputs


def _head_gradients(adapter, final, ids, device, scale) -> torch.Tensor:
    """d(scale * loss_n)/d(final hidden state) for every sample n; loss_n is the mean next-token cross-entropy."""
    grads = torch.empty_like(final)
    with on_device([adapter.norm, adapter.lm_head], device), torch.enable_grad():
        for n in range(final.shape[0]):
            h = final[n : n + 1].to(device).requires_grad_(True)
            logits = adapter.lm_head(adapter.norm(h)).float()
            target = ids[n : n + 1, 1:].to(device)
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1))
            grads[n] = torch.autograd.grad(loss * scale, h)[0][0].to(grads.device)
    return grads


def _backward_sweep(blocks, adapter, inputs, grads, kwargs, device, offload, norm, sums) -> None:
    """Walk the blocks last to first; `grads` holds d(scaled loss)/d(block output) per sample and becomes the
    gradient at the block's input. Adds (scale g)^2 or |scale g| of every sample into `sums` (per block, linear)."""
    order = list(range(len(blocks)))[::-1]
    # The generator comes first in zip, so it is resumed after the last block and puts that one back too.
    for block, i in zip(_moved([blocks[i] for i in order], device, offload), order):
        weights = [lin.weight for lin in adapter.linears(block).values()]
        flags = [p.requires_grad for p in block.parameters()]
        block.requires_grad_(False)
        for w in weights:
            w.requires_grad_(True)
        acc = [a.to(device) for a in sums[i]]  # no copy when the sums live on the device
        x_all = inputs[i]
        try:
            with torch.enable_grad():
                for n in range(x_all.shape[0]):
                    x = x_all[n : n + 1].to(device).requires_grad_(True)
                    out = block_output(block(x, **kwargs))
                    dx, *gw = torch.autograd.grad(out, [x, *weights], grad_outputs=grads[n : n + 1].to(device))
                    grads[n] = dx[0].to(grads.device)
                    for a, g in zip(acc, gw):
                        g = g.float()
                        a.addcmul_(g, g) if norm == "l2" else a.add_(g.abs())
        finally:
            for p, flag in zip(block.parameters(), flags):
                p.requires_grad_(flag)
        sums[i] = [a.to(s.device) for a, s in zip(acc, sums[i])]
        inputs[i] = None  # this block's inputs are no longer needed
    return sums


@dataclass
class Gblm(LayerwiseMethod):
    name = "gblm"
    stat = ColumnNorm
    gradient_norm: str = hyperparameter(
        "l2", "aggregate the per-sample LM-loss gradients as l2, sqrt(sum (scale*g)^2) (GBLM's default), or l1, "
        "sum |scale*g|", choices=GRADIENT_NORMS)
    gradient_scale: float = hyperparameter(
        100.0, "the gradient scale folded into G (GBLM's --scale): weighs G against ||X||", exclusive_minimum=0)
    x_norm: str = hyperparameter(
        "per-sample", "||X_j|| convention: l2 (all tokens, the formulas as written), per-sample (/sqrt N, Wanda's "
        "and GBLM's code), rms (/sqrt(N*T))", choices=X_NORMS)
    gradient_chunk: int = hyperparameter(
        16, "samples per forward/backward sweep of the gradient pass (memory, not results)", minimum=1)

    def __post_init__(self):
        super().__post_init__()
        self.gradients: list[dict[str, torch.Tensor]] | None = None  # not a field: not a hyperparameter

    def prepare(self, model, input_ids, device, offload=True, store=None, micro_batch=4) -> None:
        self.gradients = lm_gradients(model, input_ids, device, self.gradient_scale, self.gradient_norm,
                                      self.gradient_chunk, offload, store)

    @torch.no_grad()
    def prune_block(self, ctx: BlockContext) -> None:
        if self.gradients is None:
            raise RuntimeError("gblm: prepare() must compute the gradients before the walk")
        stats = ctx.collect(ColumnNorm, list(ctx.linears))
        G = self.gradients[ctx.index]
        for name, linear in ctx.linears.items():
            score = gblm_score(linear.weight, stats[name].norm(self.x_norm), G[name])
            apply_mask(linear.weight.data, ctx.pattern_for(name, self.pattern).mask(score))


def gblm_score(weight: torch.Tensor, column_norm: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    w = weight.detach().abs().float()
    return w * column_norm.to(w.device).unsqueeze(0) + w * G.to(w.device)
