"""A linear layer holding a 2:4 weight both dense and cuSPARSELt-compressed; it picks the faster kernel per call.

Sparse tensor cores only win on large products: below a measured token count the dense kernel is faster, so
`min_sparse_tokens` (from the crossover table of a sweep) sends small calls, decode included, to cuBLAS.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cusparselt import TORCH_LAYOUT, Layout
from .sparsity import is_2of4
from .transpose import contiguous
from ..errors import WandappError

NEVER = 1 << 62  # a threshold no call reaches: always dense


def choose_kernel(tokens: int, min_sparse_tokens: int) -> str:
    """'sparse' when the call multiplies at least `min_sparse_tokens` rows, else 'dense'."""
    return "sparse" if tokens >= min_sparse_tokens else "dense"


def cusparselt_available(device: torch.device) -> bool:
    return device.type == "cuda" and torch.backends.cusparselt.is_available()


class SparseLinear(nn.Module):
    """Drop-in for nn.Linear with a 2:4 weight. `alg_id` and `layout` (cuSPARSELt's) come from the tuner."""

    def __init__(self, linear: nn.Linear, min_sparse_tokens: int = NEVER, alg_id: int = 0, split_k: int = 1,
                 lt=None, layout: str | None = None):
        super().__init__()
        weight = linear.weight.detach()
        if not is_2of4(weight):
            raise WandappError(f"weight of shape {tuple(weight.shape)} is not 2:4 sparse; prune it with --nm 2:4 first")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = nn.Parameter(weight, requires_grad=False)  # dense kernel and reference
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)
        self.min_sparse_tokens = min_sparse_tokens
        self.alg_id, self.split_k = alg_id, split_k
        self.lt = lt  # a CusparseLt context with cached plans; None: torch._cslt_sparse_mm (plan built per call)
        # How the product is posed to cuSPARSELt (a cusparselt.Layout name; with lt only), from the tuner.
        self.layout = None if layout is None or lt is None else Layout.parse(layout)
        self.compressed = None
        if cusparselt_available(weight.device) and min_sparse_tokens < NEVER:
            self.compressed = lt.compress(weight, self.layout or TORCH_LAYOUT) if lt else \
                torch._cslt_compress(weight.contiguous())

    def kernel_for(self, tokens: int) -> str:
        if self.compressed is None:
            return "dense"
        return choose_kernel(tokens, self.min_sparse_tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.numel() // self.in_features
        if self.kernel_for(tokens) == "dense":
            return F.linear(x, self.weight, self.bias)
        x2 = x.reshape(tokens, self.in_features).contiguous()
        # torch's layout computes W @ x^T (sparse operand first) into (out, tokens); the caller gets its
        # transpose. torch's transpose_result=True (writing (tokens, out)) measured 2-3x slower on the H100.
        if self.lt is not None:
            y = self.lt.linear(self.compressed, x2, self.out_features, self.alg_id, self.split_k,
                               self.layout or TORCH_LAYOUT)
        else:
            y = torch._cslt_sparse_mm(self.compressed, x2.t(), alg_id=self.alg_id, split_k=self.split_k).t()
        # A transposed (strided) output made the following elementwise ops and attention so slow that a
        # LLaMA-7B-shaped prefill at 2048 tokens ran 2.6x slower than dense (measured); one copy is cheaper.
        # (A no-op for layouts that write (tokens, out) directly.) The copy is a tiled transpose: torch's own
        # copy of this view cost more than the sparse product saved.
        y = contiguous(y)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        layout = (self.layout or TORCH_LAYOUT).name()
        return (f"{self.in_features}, {self.out_features}, min_sparse_tokens={self.min_sparse_tokens}, "
                f"alg_id={self.alg_id}, layout={layout}")
