"""A whole gated MLP, dense against the fused 2:4 module (SparseGatedMLP), over token counts.

Two figures per token count: the MLP's matrix products alone (gate, up and down with cuBLAS against the fused
gate+up and the down product with cuSPARSELt or CUTLASS, inputs as each stores them), and the module as run (activation
and output copy included). Both are CUDA-graph replay medians, dense and sparse alternated over three passes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .linear_sweep import make_operands, rel_error
from .sparse_mlp import SparseGatedMLP
from .timing import interleaved_medians


class GatedMLP(nn.Module):
    """down(act(gate(x)) * up(x)), shaped like HF's Llama MLP."""

    def __init__(self, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor, act=F.silu):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = (_linear(w) for w in (gate, up, down))
        self.act_fn = act

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def _linear(weight: torch.Tensor) -> nn.Linear:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    linear.weight = nn.Parameter(weight, requires_grad=False)
    return linear


class MlpCase:
    """One token count of one MLP: the dense module, its fused 2:4 module with the given choices, the inputs,
    and the matrix products of each as closures (for timing, or for a sustained replay). reference: the ops' CPU
    reference kernels (tests only)."""

    def __init__(self, dense: GatedMLP, tokens: int, gate_up, down, generator=None, reference: bool = False):
        self.dense = dense
        self.sparse = s = SparseGatedMLP(dense, min_sparse_tokens=1, gate_up=gate_up, down=down, reference=reference)
        w_gate = dense.gate_proj.weight
        kw = dict(dtype=w_gate.dtype, device=w_gate.device, generator=generator)
        self.x, self.h = torch.randn(tokens, s.hidden, **kw), torch.randn(tokens, s.inter, **kw)
        self.h_t = self.h.t().contiguous()  # down's input as cuSPARSELt's fused module stores it

    def dense_products(self):
        d = self.dense
        return (F.linear(self.x, d.gate_proj.weight), F.linear(self.x, d.up_proj.weight),
                F.linear(self.h, d.down_proj.weight))

    def sparse_products(self):
        s = self.sparse  # CUTLASS takes x and h as they come, cuSPARSELt's fused module h transposed
        return s.gate_up_product(self.x), s.down_product(self.h if s.cutlass else self.h_t)

    def record(self, rounds: int = 3) -> dict:
        """The products and the modules, dense and sparse timed in `rounds` alternating passes, and the error."""
        with torch.inference_mode():
            s = self.sparse
            rec = dict(hidden=s.hidden, inter=s.inter, tokens=self.x.shape[0],
                       gate_up=[*s.gate_up_alg, s.gate_up_name], down=[*s.down_alg, s.down_name],
                       rel_err=rel_error(self.sparse(self.x), self.dense(self.x)))
            rec.update(interleaved_medians({"dense_products_ms": self.dense_products,
                                            "sparse_products_ms": self.sparse_products,
                                            "dense_mlp_ms": lambda: self.dense(self.x),
                                            "sparse_mlp_ms": lambda: self.sparse(self.x)}, self.x.device, rounds))
        rec["products_speedup"] = rec["dense_products_ms"] / rec["sparse_products_ms"]
        rec["mlp_speedup"] = rec["dense_mlp_ms"] / rec["sparse_mlp_ms"]
        return rec


def random_gated_mlp(hidden: int, inter: int, dtype, device, generator=None) -> GatedMLP:
    """A gated MLP with random 2:4 weights (gate, up: (inter, hidden); down: (hidden, inter))."""
    return GatedMLP(*(make_operands(shape, 1, dtype, device, generator)[0]
                      for shape in ((inter, hidden), (inter, hidden), (hidden, inter))))


def time_mlp(hidden: int, inter: int, tokens_list, dtype, device, choose, rounds: int = 3) -> list[dict]:
    """Records per token count. choose(tokens) -> (gate_up (alg, split_k, layout), down (alg, split_k, layout)).
    Dense and sparse are timed in `rounds` alternating passes (interleaved_medians)."""
    gen = torch.Generator(device).manual_seed(2)
    dense = random_gated_mlp(hidden, inter, dtype, device, gen)
    return [MlpCase(dense, tokens, *choose(tokens), generator=gen).record(rounds) for tokens in tokens_list]
