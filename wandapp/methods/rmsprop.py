"""RMSprop for regional optimisation (torch's defaults: alpha 0.99, eps 1e-8, no momentum, not centred).

On CUDA, with Triton installed, one fused kernel per weight reads the gradient, the running square and the weight
once and writes the square and the weight once: 20 bytes per parameter against about 50 for torch's foreach
implementation (five passes). On a LLaMA-7B block torch's step took 3.9 ms of RO's ~11 ms per sample (H100).
Elsewhere it is torch.optim.RMSprop.
"""

from __future__ import annotations

import torch

try:  # Triton ships with CUDA builds of torch; CPU-only installs have none
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

ALPHA, EPS = 0.99, 1e-8


def rmsprop(params: list[torch.nn.Parameter], lr: float, fused: bool | None = None):
    """An RMSprop optimiser over `params`: the fused one where it can run (or `fused=True` demands it)."""
    can_fuse = triton is not None and all(p.is_cuda and p.dtype == torch.float32 and p.is_contiguous() for p in params)
    if fused if fused is not None else can_fuse:
        if not can_fuse:
            raise RuntimeError("the fused RMSprop needs Triton and contiguous float32 CUDA parameters")
        return FusedRMSprop(params, lr)
    return torch.optim.RMSprop(params, lr=lr, alpha=ALPHA, eps=EPS)


class FusedRMSprop:
    """The same update as torch.optim.RMSprop(params, lr) with default settings, one kernel per parameter."""

    def __init__(self, params: list[torch.nn.Parameter], lr: float):
        self.params = list(params)
        self.lr = lr
        self.square_avg = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for p, v in zip(self.params, self.square_avg):
            if p.grad is None:
                continue
            g = p.grad.contiguous()
            n = p.numel()
            _rmsprop_kernel[(triton.cdiv(n, 4096),)](p, g, v, n, self.lr, ALPHA, EPS, BLOCK=4096)


if triton is not None:

    @triton.jit
    def _rmsprop_kernel(p_ptr, g_ptr, v_ptr, n, lr, alpha, eps, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        keep = offs < n
        g = tl.load(g_ptr + offs, mask=keep).to(tl.float32)
        v = tl.load(v_ptr + offs, mask=keep) * alpha + (1 - alpha) * g * g
        p = tl.load(p_ptr + offs, mask=keep) - lr * tl.div_rn(g, tl.sqrt_rn(v) + eps)
        tl.store(v_ptr + offs, v, mask=keep)
        tl.store(p_ptr + offs, p, mask=keep)
