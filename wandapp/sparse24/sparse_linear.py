"""A linear layer holding a 2:4 weight both dense and cuSPARSELt-compressed; it picks the faster kernel per call.

Sparse tensor cores only win on large products: below a measured token count the dense kernel is faster, so
`min_sparse_tokens` (from the crossover table of a sweep) sends small calls, decode included, to cuBLAS.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import cslt_ops, cutlass_ops  # (they register torch.ops.wandapp.cslt_mm and cutlass_mm)
from .cusparselt import TORCH_LAYOUT, Layout, stored_input, token_output
from .cutlass_sparse import available as cutlass_available, is_cutlass
from .transpose import contiguous
from ..errors import WandappError
from ..masks import follows_nm

NEVER = 1 << 62  # a threshold no call reaches: always dense


def choose_kernel(tokens: int, min_sparse_tokens: int) -> str:
    """'sparse' when the call multiplies at least `min_sparse_tokens` rows, else 'dense'."""
    return "sparse" if tokens >= min_sparse_tokens else "dense"


def cusparselt_available(device: torch.device) -> bool:
    return device.type == "cuda" and torch.backends.cusparselt.is_available()


def kernel_available(layout_name: str, device: torch.device) -> bool:
    """Whether the library a tuned choice names (cuSPARSELt layout or CUTLASS kernel) runs on the device."""
    return cutlass_available(device) if is_cutlass(layout_name) else cusparselt_available(device)


def compress_for(weight: torch.Tensor, layout_name: str, reference: bool):
    """(compressed, meta) as the choice's op takes them; meta is None for cuSPARSELt (one buffer holds both)."""
    if is_cutlass(layout_name):
        return cutlass_ops.compress(weight, layout_name, reference)
    return cslt_ops.compress(weight, Layout.parse(layout_name), reference), None


def token_major(y: torch.Tensor) -> torch.Tensor:
    """A product's (tokens, out) values, possibly a transposed view, as a contiguous tensor.

    A transposed (strided) output made the following elementwise ops and attention so slow that a
    LLaMA-7B-shaped prefill at 2048 tokens ran 2.6x slower than dense (measured), and torch's own copy of the
    view cost more than the sparse product saved, hence the tiled copy when run eagerly. Under torch.compile
    inductor makes the copy; leaving it the view to read in the next kernel made the compiled model 2.3x
    slower (measured on the H100).
    """
    return y.contiguous() if torch.compiler.is_compiling() else contiguous(y)


def sparse_product(compressed, x2: torch.Tensor, out_features: int, alg_id: int, split_k: int,
                   layout: Layout) -> torch.Tensor:
    """x2 (tokens, in) -> y (tokens, out) through the cslt_mm op, possibly a transposed view."""
    y = torch.ops.wandapp.cslt_mm(compressed, stored_input(x2, layout), out_features, alg_id, split_k, layout.name())
    return token_output(y, layout, x2.shape[0])


class SparseLinear(nn.Module):
    """Drop-in for nn.Linear with a 2:4 weight. `alg_id`, `split_k` and `layout` come from the tuner: a cuSPARSELt
    layout name, or a CUTLASS kernel choice ("cutlass/...", which ignores alg_id and split_k).

    reference: use the op's CPU reference kernel (a plain matmul) instead of the GPU library; for tests only.
    """

    def __init__(self, linear: nn.Linear, min_sparse_tokens: int = NEVER, alg_id: int = 0, split_k: int = 1,
                 layout: str | None = None, reference: bool = False):
        super().__init__()
        weight = linear.weight.detach()
        if not follows_nm(weight, 2, 4):
            raise WandappError(f"weight of shape {tuple(weight.shape)} is not 2:4 sparse; prune it with --nm 2:4 first")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = nn.Parameter(weight, requires_grad=False)  # dense kernel and reference
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)
        self.min_sparse_tokens = min_sparse_tokens
        self.alg_id, self.split_k = alg_id, split_k
        self.layout_name = layout or TORCH_LAYOUT.name()  # how the product is posed, and to which library
        self.layout = None if is_cutlass(self.layout_name) else Layout.parse(self.layout_name)
        compressed = meta = None
        if (reference or kernel_available(self.layout_name, weight.device)) and min_sparse_tokens < NEVER:
            compressed, meta = compress_for(weight, self.layout_name, reference)
        # Buffers, so that torch.compile's CUDA graphs take them as static inputs instead of copying them per call.
        self.register_buffer("compressed", compressed, persistent=False)
        self.register_buffer("meta", meta, persistent=False)

    def kernel_for(self, tokens: int) -> str:
        if self.compressed is None:
            return "dense"
        return choose_kernel(tokens, self.min_sparse_tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.numel() // self.in_features
        if self.kernel_for(tokens) == "dense":
            return F.linear(x, self.weight, self.bias)
        x2 = x.reshape(tokens, self.in_features)
        if self.layout is None:  # CUTLASS: writes (tokens, out) itself
            y = torch.ops.wandapp.cutlass_mm(self.compressed, self.meta, x2, self.out_features, self.layout_name)
        else:
            y = token_major(sparse_product(self.compressed, x2, self.out_features, self.alg_id, self.split_k,
                                           self.layout))
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f"{self.in_features}, {self.out_features}, min_sparse_tokens={self.min_sparse_tokens}, "
                f"alg_id={self.alg_id}, layout={self.layout_name}")
