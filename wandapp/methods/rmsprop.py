"""RMSprop for regional optimisation (torch's defaults: alpha 0.99, eps 1e-8, no momentum, not centred).

The float32 master weights take the update. With `copies` (a lower-precision compute copy of each weight, which
the forward and backward passes use), gradients are read from the copies and the copies are refreshed from the
masters after each step.

On CUDA, with Triton installed, one fused kernel per weight reads gradient, running square and weight once and
writes them (and the copy) once: about 20 bytes per parameter against about 50 for torch's foreach implementation
(five passes). On a LLaMA-7B block torch's step took 3.9 ms of RO's ~11 ms per sample (H100).
"""

from __future__ import annotations

import torch

try:  # Triton ships with CUDA builds of torch; CPU-only installs have none
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

ALPHA, EPS = 0.99, 1e-8


def rmsprop(params: list[torch.Tensor], lr: float, copies: list[torch.Tensor] | None = None,
            fused: bool | None = None):
    """An RMSprop optimiser over `params`: the fused one where it can run (or where `fused=True` demands it)."""
    tensors = [*params, *(copies or [])]
    can_fuse = triton is not None and all(t.is_cuda and t.is_contiguous() for t in tensors) and all(
        p.dtype == torch.float32 for p in params)
    if fused if fused is not None else can_fuse:
        if not can_fuse:
            raise RuntimeError("the fused RMSprop needs Triton and contiguous CUDA tensors with float32 masters")
        return FusedRMSprop(params, lr, copies)
    return MirroredRMSprop(params, lr, copies)


class MirroredRMSprop:
    """torch.optim.RMSprop on the masters; gradients come from, and new weights go to, the copies if any."""

    def __init__(self, params, lr: float, copies=None):
        self.params, self.copies = list(params), list(copies) if copies else None
        self.opt = torch.optim.RMSprop(self.params, lr=lr, alpha=ALPHA, eps=EPS)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for t in self.copies or self.params:
            t.grad = None

    @torch.no_grad()
    def step(self) -> None:
        if self.copies:
            for p, c in zip(self.params, self.copies):
                p.grad = None if c.grad is None else c.grad.to(p.dtype)
        self.opt.step()
        if self.copies:
            for p, c in zip(self.params, self.copies):
                c.copy_(p)


class FusedRMSprop:
    """The same update as torch.optim.RMSprop(params, lr) with default settings, one kernel per parameter."""

    def __init__(self, params, lr: float, copies=None):
        self.params = list(params)
        self.copies = list(copies) if copies else list(self.params)
        self.lr = lr
        self.square_avg = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for t in self.copies:
            t.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for p, c, v in zip(self.params, self.copies, self.square_avg):
            if c.grad is None:
                continue
            n = p.numel()
            _rmsprop_kernel[(triton.cdiv(n, 4096),)](p, c.grad.contiguous(), v, c, n, self.lr, ALPHA, EPS,
                                                     BLOCK=4096)


if triton is not None:

    @triton.jit
    def _rmsprop_kernel(p_ptr, g_ptr, v_ptr, c_ptr, n, lr, alpha, eps, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        keep = offs < n
        g = tl.load(g_ptr + offs, mask=keep).to(tl.float32)
        v = tl.load(v_ptr + offs, mask=keep) * alpha + (1 - alpha) * g * g
        p = tl.load(p_ptr + offs, mask=keep) - lr * tl.div_rn(g, tl.sqrt_rn(v) + eps)
        tl.store(v_ptr + offs, v, mask=keep)
        tl.store(p_ptr + offs, p, mask=keep)
        tl.store(c_ptr + offs, p.to(c_ptr.dtype.element_ty), mask=keep)  # c is p itself without a copy
