"""The CUTLASS sm90 2:4 product as a torch custom op, `wandapp::cutlass_mm`, as cslt_ops does for cuSPARSELt.

It takes x as it comes (tokens, in) and returns y (tokens, out), contiguous: nothing to transpose around it.
The built kernels are looked up per device (`shared_context`). On the CPU a reference kernel runs with the
weight itself as "values" (`compress(..., reference=True)`), so CPU tests run the same modules and graphs.
"""

from __future__ import annotations

import functools

import torch

from .cutlass_sparse import Choice, CutlassSparse


@functools.cache
def shared_context(device_index: int) -> CutlassSparse:
    return CutlassSparse(torch.device("cuda", device_index))


def context_for(device: torch.device) -> CutlassSparse:
    device = torch.device(device)
    return shared_context(device.index if device.index is not None else torch.cuda.current_device())


@torch.library.custom_op("wandapp::cutlass_mm", mutates_args=(), device_types="cuda")
def cutlass_mm(values: torch.Tensor, meta: torch.Tensor, x: torch.Tensor, out_features: int,
               choice: str) -> torch.Tensor:
    """y (tokens, out) = x (tokens, in) @ W^T, W compressed for the family of `choice` (a Choice name)."""
    return context_for(x.device).linear(values, meta, x.contiguous(), out_features, Choice.parse(choice))


@cutlass_mm.register_fake
def _(values, meta, x, out_features, choice):
    return x.new_empty((x.shape[0], out_features))


@cutlass_mm.register_kernel("cpu")
def _(values, meta, x, out_features, choice):
    return x @ values.t()  # reference: values is the weight (out, in)


def compress(weight: torch.Tensor, choice: str, reference: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, meta) as `cutlass_mm` takes them for `choice`; with `reference` the weight and an empty meta."""
    if reference:
        return weight.detach().contiguous().clone(), weight.new_empty(0, dtype=torch.uint8)
    ctx = context_for(weight.device)
    return ctx.compress(weight, ctx.families[Choice.parse(choice).config])
