"""The CUTLASS sm90 2:4 product as a torch custom op, `wandapp::cutlass_mm`, as cslt_ops does for cuSPARSELt.

It takes x as it comes (tokens, in) and returns y (tokens, out), contiguous: nothing to transpose around it.
The built kernels and their workspace are looked up per device (`context_for`). On the CPU a reference kernel
runs with the weight itself as "values" (`compress(..., reference=True)`), so CPU tests run the same modules
and graphs.
"""

from __future__ import annotations

import functools

import torch

from .cutlass_sparse import Choice, CutlassSparse
from .per_device import per_device


context_for = per_device(CutlassSparse)
_choice = functools.cache(Choice.parse)  # parsed once per name, not on every eager call


@torch.library.custom_op("wandapp::cutlass_mm", mutates_args=(), device_types="cuda")
def cutlass_mm(values: torch.Tensor, meta: torch.Tensor, x: torch.Tensor, out_features: int,
               choice: str) -> torch.Tensor:
    """y (tokens, out) = x (tokens, in) @ W^T, W compressed for the family of `choice` (a Choice name)."""
    return context_for(x.device).linear(values, meta, x.contiguous(), out_features, _choice(choice))


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
    return ctx.compress(weight, ctx.families[_choice(choice).config])
