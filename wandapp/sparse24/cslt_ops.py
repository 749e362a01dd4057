"""The cuSPARSELt product as a torch custom op, so that torch.compile can trace a model through it.

`wandapp::cslt_mm` takes the compressed weight and x as stored by a `Layout` and returns y as stored. Inside a
compiled graph it is one opaque node, and inductor fuses the model's norms, rotary and activations around it.

The op cannot carry a Python object, so the cuSPARSELt handle and its plan cache are looked up per device
(`context_for`, one per device as torch keeps its cuBLAS handles).

On the CPU the op has a reference kernel: "compressed" is then the weight itself as stored (`reference_compress`),
and the product is a plain matmul in the same layout. It lets CPU tests run the whole sparse plumbing,
torch.compile included; it is never faster than dense and `SparseLinear` uses it only when asked.
"""

from __future__ import annotations

import functools

import torch

from .cusparselt import CusparseLt, Layout
from .per_device import per_device

context_for = per_device(CusparseLt)  # the one cuSPARSELt handle (and plan cache) of a CUDA device


@functools.cache
def _layout(name: str) -> Layout:
    return Layout.parse(name)


def _tokens_and_in(x: torch.Tensor, layout: Layout) -> tuple[int, int]:
    """(tokens, in_features) of x as the layout stores it."""
    return (x.shape[1], x.shape[0]) if layout.x_t else (x.shape[0], x.shape[1])


@torch.library.custom_op("wandapp::cslt_mm", mutates_args=(), device_types="cuda")
def cslt_mm(compressed: torch.Tensor, x: torch.Tensor, out_features: int, alg_id: int, split_k: int,
            layout: str) -> torch.Tensor:
    """y = x @ W^T with everything as stored by `layout`: x (tokens, in) or (in, tokens) with x_t, contiguous;
    y (tokens, out) or (out, tokens) with y_t. The token count must be a multiple of 16 (cuSPARSELt's rule)."""
    lay = _layout(layout)
    tokens, in_features = _tokens_and_in(x, lay)
    plan = context_for(x.device).plan(out_features, in_features, tokens, x.dtype, alg_id, split_k, lay)
    return plan.run(compressed, x.contiguous())


@cslt_mm.register_fake
def _(compressed, x, out_features, alg_id, split_k, layout):
    lay = _layout(layout)
    tokens = _tokens_and_in(x, lay)[0]
    return x.new_empty((out_features, tokens) if lay.y_t else (tokens, out_features))


@cslt_mm.register_kernel("cpu")
def _(compressed, x, out_features, alg_id, split_k, layout):
    lay = _layout(layout)
    weight = compressed.t() if lay.weight_t else compressed  # (out, in)
    y = (x.t() if lay.x_t else x) @ weight.t()  # (tokens, out)
    return y.t().contiguous() if lay.y_t else y


def compress(weight: torch.Tensor, layout: Layout, reference: bool = False) -> torch.Tensor:
    """The weight in the form `cslt_mm` takes: cuSPARSELt's compressed bytes, or with `reference` the weight as
    stored."""
    if reference:
        return reference_compress(weight, layout)
    return context_for(weight.device).compress(weight, layout)


def reference_compress(weight: torch.Tensor, layout: Layout) -> torch.Tensor:
    return (weight.t() if layout.weight_t else weight).detach().contiguous().clone()

