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


def time_mlp(hidden: int, inter: int, tokens_list, dtype, device, choose, rounds: int = 3) -> list[dict]:
    """Records per token count. choose(tokens) -> (gate_up (alg, split_k, layout), down (alg, split_k, layout)).
    Dense and sparse are timed in `rounds` alternating passes (interleaved_medians)."""
    gen = torch.Generator(device).manual_seed(2)
    weights = [make_operands(shape, 1, dtype, device, gen)[0] for shape in ((inter, hidden), (inter, hidden),
                                                                            (hidden, inter))]
    dense = GatedMLP(*weights)
    records = []
    for tokens in tokens_list:
        gate_up, down = choose(tokens)
        sparse = SparseGatedMLP(dense, min_sparse_tokens=1, gate_up=gate_up, down=down)
        x = torch.randn(tokens, hidden, dtype=dtype, device=device, generator=gen)
        h = torch.randn(tokens, inter, dtype=dtype, device=device, generator=gen)
        h_t = h.t().contiguous()
        w_gate, w_up, w_down = weights
        ops = torch.ops.wandapp

        def dense_products():
            return F.linear(x, w_gate), F.linear(x, w_up), F.linear(h, w_down)

        def sparse_products():
            if sparse.cutlass:  # both token-major: x and h as they come
                return (ops.cutlass_mm(sparse.compressed_gate_up, sparse.meta_gate_up, x, 2 * inter, gate_up[2]),
                        ops.cutlass_mm(sparse.compressed_down, sparse.meta_down, h, hidden, down[2]))
            return (ops.cslt_mm(sparse.compressed_gate_up, x, 2 * inter, *gate_up),
                    ops.cslt_mm(sparse.compressed_down, h_t, hidden, *down))

        with torch.inference_mode():
            ref = dense(x)
            rec = dict(hidden=hidden, inter=inter, tokens=tokens, gate_up=list(gate_up), down=list(down),
                       rel_err=rel_error(sparse(x), ref))
            rec.update(interleaved_medians({"dense_products_ms": dense_products, "sparse_products_ms": sparse_products,
                                            "dense_mlp_ms": lambda: dense(x), "sparse_mlp_ms": lambda: sparse(x)},
                                           device, rounds))
        rec["products_speedup"] = rec["dense_products_ms"] / rec["sparse_products_ms"]
        rec["mlp_speedup"] = rec["dense_mlp_ms"] / rec["sparse_mlp_ms"]
        records.append(rec)
    return records
