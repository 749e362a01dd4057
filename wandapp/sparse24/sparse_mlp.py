"""A gated MLP (down(act(gate(x)) * up(x)), as in Llama, Mistral, Qwen) run as two 2:4 products.

gate and up share their input, so they run as one (2 x inter, in) sparse product, which cuSPARSELt runs
faster than two (H100, LLaMA-7B shapes: 1.50x of dense at 2048 tokens and 1.60x at 8192, against 1.38x and
1.53x for one alone; benchmarks/results/h100_cslt_layouts_v3.json). Its fast layouts write (features, tokens);
the activation runs in that layout and down_proj takes the result as its stored x^T, so no copy runs between
the products, only one at the end. With CUTLASS kernels (tuned choices named "cutlass/...") everything stays
(tokens, features): the kernels read x and write y token-major.
"""

from __future__ import annotations

import torch
from torch import nn

from ..masks import follows_nm
from .cusparselt import Layout, stored_input, token_output
from .cutlass_sparse import is_cutlass
from .sparse_linear import NEVER, compress_for, kernel_available, token_major

GATE_UP_LAYOUT = "sparseA+y_t"  # defaults; the tuner picks per machine (on the H100 the y_t layouts ran within 2%)
DOWN_LAYOUT = "sparseA+x_t+y_t"


def is_gated_mlp(mlp: nn.Module) -> bool:
    """Three bias-free 2:4 linears and an activation, as HF's Llama-family MLPs hold them."""
    linears = [getattr(mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
    return (callable(getattr(mlp, "act_fn", None)) and all(isinstance(lin, nn.Linear) for lin in linears)
            and all(lin.bias is None and follows_nm(lin.weight, 2, 4) for lin in linears))


def gate_up_layouts(layouts: list[Layout]) -> list[Layout]:
    """The layouts that take x as it comes and write (features, tokens): the activation's input layout."""
    return [lay for lay in layouts if lay.y_t and not lay.x_t]


def down_layouts(layouts: list[Layout]) -> list[Layout]:
    """The same layouts taking x stored transposed, as the activation leaves it."""
    seen = []
    for lay in layouts:
        lay = Layout(lay.sparse, lay.weight_t, True, lay.y_t, lay.col)
        if lay not in seen:
            seen.append(lay)
    return seen


class SparseGatedMLP(nn.Module):
    """Drop-in for a gated MLP; dense (the original module) below `min_sparse_tokens` tokens.

    gate_up, down: (alg_id, split_k, layout name) of the two products, from the tuner; both cuSPARSELt layouts
    or both CUTLASS choices. reference: the ops' CPU reference kernels instead of the GPU libraries (tests only).
    """

    def __init__(self, mlp: nn.Module, min_sparse_tokens: int = NEVER, gate_up=(0, 1, GATE_UP_LAYOUT),
                 down=(0, 1, DOWN_LAYOUT), reference: bool = False):
        super().__init__()
        if not is_gated_mlp(mlp):
            raise ValueError("not a gated MLP with bias-free 2:4 gate_proj, up_proj and down_proj")
        self.dense = mlp  # the dense path, and what restore puts back
        self.hidden, self.inter = mlp.gate_proj.in_features, mlp.gate_proj.out_features
        self.min_sparse_tokens = min_sparse_tokens
        self.gate_up_alg, self.down_alg = gate_up[:2], down[:2]
        self.gate_up_name, self.down_name = gate_up[2], down[2]
        self.cutlass = is_cutlass(gate_up[2])
        if self.cutlass != is_cutlass(down[2]):
            raise ValueError(f"gate_up and down must both run on cuSPARSELt or both on CUTLASS; got {gate_up[2]} "
                             f"and {down[2]}")
        if not self.cutlass:
            self.gate_up_layout, self.down_layout = Layout.parse(gate_up[2]), Layout.parse(down[2])
            if not (self.gate_up_layout.y_t and not self.gate_up_layout.x_t and self.down_layout.x_t):
                raise ValueError(f"gate_up must write (features, tokens) from natural x and down must take x^T; "
                                 f"got {gate_up[2]} and {down[2]}")
        packed = dict(gate_up=(None, None), down=(None, None))
        if (reference or kernel_available(gate_up[2], mlp.gate_proj.weight.device)) and min_sparse_tokens < NEVER:
            gate_up_weight = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).detach()
            packed["gate_up"] = compress_for(gate_up_weight, gate_up[2], reference)
            packed["down"] = compress_for(mlp.down_proj.weight.detach(), down[2], reference)
        for name, (compressed, meta) in packed.items():  # buffers: see SparseLinear
            self.register_buffer(f"compressed_{name}", compressed, persistent=False)
            self.register_buffer(f"meta_{name}", meta, persistent=False)

    # The dense linears stay reachable under their usual names, so the model adapter still finds them.
    gate_proj = property(lambda self: self.dense.gate_proj)
    up_proj = property(lambda self: self.dense.up_proj)
    down_proj = property(lambda self: self.dense.down_proj)

    def kernel_for(self, tokens: int) -> str:
        return "sparse" if self.compressed_gate_up is not None and tokens >= self.min_sparse_tokens else "dense"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.numel() // self.hidden
        if self.kernel_for(tokens) == "dense":
            return self.dense(x)
        if self.cutlass:  # everything (tokens, features)
            gate_up = self.gate_up_product(x.reshape(tokens, self.hidden))
            h = self.dense.act_fn(gate_up[:, : self.inter]) * gate_up[:, self.inter:]
            return self.down_product(h).reshape(x.shape)
        x2 = stored_input(x.reshape(tokens, self.hidden), self.gate_up_layout)  # padded rows give zero outputs
        gate_up_t = self.gate_up_product(x2)  # (2 inter, padded tokens)
        h_t = self.dense.act_fn(gate_up_t[: self.inter]) * gate_up_t[self.inter:]  # (inter, tokens): down's x^T
        y = token_major(token_output(self.down_product(h_t), self.down_layout, tokens))
        return y.reshape(*x.shape[:-1], self.hidden)

    def gate_up_product(self, x: torch.Tensor) -> torch.Tensor:
        """gate and up as one product, of x as the kernel takes it: CUTLASS (tokens, hidden) -> (tokens, 2 inter);
        cuSPARSELt x stored in the gate_up layout -> (2 inter, tokens)."""
        if self.cutlass:
            return torch.ops.wandapp.cutlass_mm(self.compressed_gate_up, self.meta_gate_up, x, 2 * self.inter,
                                                self.gate_up_name)
        return torch.ops.wandapp.cslt_mm(self.compressed_gate_up, x, 2 * self.inter, *self.gate_up_alg,
                                         self.gate_up_name)

    def down_product(self, h: torch.Tensor) -> torch.Tensor:
        """down of the activation as the kernel takes it: CUTLASS (tokens, inter); cuSPARSELt (inter, tokens)."""
        if self.cutlass:
            return torch.ops.wandapp.cutlass_mm(self.compressed_down, self.meta_down, h, self.hidden, self.down_name)
        return torch.ops.wandapp.cslt_mm(self.compressed_down, h, self.hidden, *self.down_alg, self.down_name)

    def extra_repr(self) -> str:
        return (f"{self.hidden}, {self.inter}, min_sparse_tokens={self.min_sparse_tokens}, gate_up={self.gate_up_alg} "
                f"{self.gate_up_name}, down={self.down_alg} {self.down_name}")
