"""CPU tests of the sparse inference modules through the cslt_mm op's reference kernel (no GPU needed).

The reference kernel is a plain matmul in the layout the op is given, so these check the plumbing around
cuSPARSELt: layouts, padding to 16 tokens, the fused gate+up MLP, swapping and restoring, and torch.compile
tracing through the custom op. tests/test_gpu.py runs the same modules on cuSPARSELt.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import build_tiny_llama
from wandapp.sparse24 import cslt_ops, cutlass_ops
from wandapp.sparse24.cusparselt import Layout
from wandapp.sparse24.end_to_end import (
    compiled_blocks,
    has_sparse_modules,
    restore_dense_linears,
    swap_in_sparse_linears,
)
from wandapp.sparse24.mlp_sweep import GatedMLP, MlpCase
from wandapp.sparse24.sparse_linear import NEVER, SparseLinear
from wandapp.sparse24.sparse_mlp import SparseGatedMLP, down_layouts, gate_up_layouts, is_gated_mlp
from wandapp.sparse24.sparsity import random_2of4_
from wandapp.sparse24.synthetic import prune_2of4_

LINEAR = lambda out_f, in_f: (16, 0, 1, "sparseB+y_t")  # noqa: E731  sparse from 16 tokens, a non-default layout
FUSED = lambda hidden, inter: (16, (0, 1, "sparseA+y_t"), (0, 1, "sparseA+x_t+y_t"))  # noqa: E731
CUTLASS = "cutlass/256x128x128_c1x1_coop/swizzle4/along_m"  # a CUTLASS kernel choice, as the tuner names one
CUTLASS_LINEAR = lambda out_f, in_f: (16, 0, 1, CUTLASS)  # noqa: E731
CUTLASS_FUSED = lambda hidden, inter: (16, (0, 1, CUTLASS), (0, 1, "cutlass/128x256x64_c1x1_coop/swizzle1/along_n"))  # noqa: E731
POLICIES = {"cusparselt": (LINEAR, FUSED), "cutlass": (CUTLASS_LINEAR, CUTLASS_FUSED)}


def _pruned_tiny_llama():
    return prune_2of4_(build_tiny_llama()).eval()


def _gated_mlp(hidden=32, inter=48):
    gen = torch.Generator().manual_seed(1)
    return GatedMLP(*(random_2of4_(torch.empty(shape), gen) for shape in ((inter, hidden), (inter, hidden),
                                                                       (hidden, inter))))


@pytest.mark.parametrize("layout", Layout.every(), ids=Layout.name)
def test_reference_op_computes_x_times_w_transposed_in_every_layout(layout):
    w, x = torch.randn(24, 40, dtype=torch.float64), torch.randn(32, 40, dtype=torch.float64)
    stored_x = x.t().contiguous() if layout.x_t else x
    y = torch.ops.wandapp.cslt_mm(cslt_ops.reference_compress(w, layout), stored_x, 24, 0, 1, layout.name())
    assert y.shape == ((24, 32) if layout.y_t else (32, 24))
    torch.testing.assert_close(y.t() if layout.y_t else y, x @ w.t())


def test_op_fake_kernel_agrees_with_the_real_one():
    layout = Layout(x_t=True)
    w, x = torch.randn(24, 40), torch.randn(40, 32)
    torch.library.opcheck(torch.ops.wandapp.cslt_mm.default,
                          (cslt_ops.reference_compress(w, layout), x, 24, 0, 1, layout.name()))


@pytest.mark.parametrize("tokens", [16, 45])  # 45: padded to 48 for the product, then cut back
def test_sparse_linear_sparse_path_matches_dense(tokens):
    lin = nn.Linear(40, 24, bias=True)
    with torch.no_grad():
        random_2of4_(lin.weight)
    sparse = SparseLinear(lin, min_sparse_tokens=16, layout="sparseB+x_t+y_t", reference=True)
    x = torch.randn(1, tokens, 40)
    assert sparse.kernel_for(tokens) == "sparse" and sparse.kernel_for(15) == "dense"
    torch.testing.assert_close(sparse(x), lin(x))


def test_cutlass_op_reference_and_fake_kernels():
    w, x = torch.randn(24, 40, dtype=torch.float64), torch.randn(45, 40, dtype=torch.float64)
    values, meta = cutlass_ops.compress(w, CUTLASS, reference=True)
    y = torch.ops.wandapp.cutlass_mm(values, meta, x, 24, CUTLASS)
    assert y.shape == (45, 24) and y.is_contiguous()  # token-major, no padding to cut
    torch.testing.assert_close(y, x @ w.t())
    torch.library.opcheck(torch.ops.wandapp.cutlass_mm.default, (values, meta, x, 24, CUTLASS))


def test_sparse_linear_on_a_cutlass_choice_matches_dense():
    lin = nn.Linear(40, 24, bias=True)
    with torch.no_grad():
        random_2of4_(lin.weight)
    sparse = SparseLinear(lin, min_sparse_tokens=16, layout=CUTLASS, reference=True)
    assert sparse.layout is None and sparse.meta is not None
    x = torch.randn(2, 45, 40)
    torch.testing.assert_close(sparse(x), lin(x))
    assert "cutlass/" in repr(sparse)


@pytest.mark.parametrize("backend", POLICIES)
@pytest.mark.parametrize("tokens", [32, 45])
def test_fused_gated_mlp_matches_the_dense_mlp(tokens, backend):
    mlp = _gated_mlp()
    fused = SparseGatedMLP(mlp, *POLICIES[backend][1](32, 48), reference=True)
    x = torch.randn(1, tokens, 32)
    assert fused.kernel_for(tokens) == "sparse"
    assert fused.compressed_gate_up.shape == (96, 32)  # gate and up stacked: one product
    torch.testing.assert_close(fused(x), mlp(x))
    assert fused.kernel_for(8) == "dense"
    torch.testing.assert_close(fused(x[:, :8]), mlp(x[:, :8]))


@pytest.mark.parametrize("backend", POLICIES)
def test_timed_sparse_products_compute_the_dense_products(backend):
    """The benchmark times MlpCase's two closures against each other: they must be the same work."""
    _, gate_up, down = POLICIES[backend][1](32, 48)
    case = MlpCase(_gated_mlp(), 40, gate_up, down, generator=torch.Generator().manual_seed(3), reference=True)
    gate, up, down_out = case.dense_products()
    sparse_gate_up, sparse_down = case.sparse_products()
    token_major = lambda y: y if y.shape[0] == 40 else y.t()  # noqa: E731  cuSPARSELt writes (features, tokens)
    torch.testing.assert_close(token_major(sparse_gate_up), torch.cat([gate, up], dim=1))
    torch.testing.assert_close(token_major(sparse_down), down_out)
    assert case.x.shape == (40, 32) and case.h_t.shape == (48, 40)


def test_fused_gated_mlp_refuses_a_layout_that_does_not_chain():
    with pytest.raises(ValueError, match="gate_up must write"):
        SparseGatedMLP(_gated_mlp(), 16, gate_up=(0, 1, "sparseA"), reference=True)
    with pytest.raises(ValueError, match="not a gated MLP"):
        SparseGatedMLP(nn.Linear(4, 4))
    with pytest.raises(ValueError, match="both run on cuSPARSELt or both on CUTLASS"):
        SparseGatedMLP(_gated_mlp(), 16, gate_up=(0, 1, CUTLASS), reference=True)


def test_layout_candidates_for_the_two_fused_products():
    layouts = [Layout.parse(n) for n in ("sparseA+y_t", "sparseB", "sparseA+x_t+y_t", "sparseB+y_t+col")]
    assert [lay.name() for lay in gate_up_layouts(layouts)] == ["sparseA+y_t", "sparseB+y_t+col"]
    assert [lay.name() for lay in down_layouts(layouts)] == ["sparseA+x_t+y_t", "sparseB+x_t", "sparseB+x_t+y_t+col"]


@pytest.mark.parametrize("backend", POLICIES)
def test_swap_runs_the_model_sparse_and_restore_gives_it_back(backend):
    model = _pruned_tiny_llama()
    ids = torch.randint(0, model.config.vocab_size, (2, 24))
    with torch.inference_mode():
        reference = model(input_ids=ids).logits
    assert not has_sparse_modules(model)
    report = swap_in_sparse_linears(model, *POLICIES[backend], reference=True)
    assert has_sparse_modules(model)
    assert set(report.values()) == {"sparse", "sparse (fused MLP)"}
    assert sum(v == "sparse (fused MLP)" for v in report.values()) == 3 * model.config.num_hidden_layers
    block = model.model.layers[0]
    assert isinstance(block.mlp, SparseGatedMLP) and isinstance(block.self_attn.q_proj, SparseLinear)
    with torch.inference_mode():
        torch.testing.assert_close(model(input_ids=ids).logits, reference)
    restore_dense_linears(model)
    assert type(block.self_attn.q_proj) is nn.Linear and is_gated_mlp(block.mlp)
    assert not has_sparse_modules(model)


def test_a_never_sparse_policy_keeps_every_call_dense():
    model = _pruned_tiny_llama()
    swap_in_sparse_linears(model, lambda o, i: (NEVER, 0, 1, None), lambda h, i: (NEVER, *FUSED(h, i)[1:]),
                           reference=True)
    assert all(m.kernel_for(1 << 20) == "dense" for m in model.modules()
               if isinstance(m, (SparseLinear, SparseGatedMLP)))


@pytest.mark.parametrize("backend", POLICIES)
def test_compiled_blocks_trace_through_the_op_in_one_graph_and_match_eager(backend):
    from torch._dynamo.utils import counters

    model = _pruned_tiny_llama()
    ids = torch.randint(0, model.config.vocab_size, (1, 32))
    swap_in_sparse_linears(model, *POLICIES[backend], reference=True)
    with torch.inference_mode():
        eager = model(input_ids=ids, use_cache=False).logits
        counters.clear()
        with compiled_blocks(model):
            compiled = model(input_ids=ids, use_cache=False).logits
            assert model.model.layers[1]._compiled_call_impl is not None
        graph_breaks = sum(counters["graph_break"].values())
        unique_graphs = counters["stats"]["unique_graphs"]
    assert model.model.layers[1]._compiled_call_impl is None  # the context undoes the compile
    assert graph_breaks == 0 and unique_graphs == 1  # one graph serves both blocks; the op did not break it
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)


def test_unmasked_causal_attention_gives_the_masked_logits_and_restores_the_setting():
    from wandapp.sparse24.end_to_end import unmasked_causal_attention

    model = build_tiny_llama(attn_implementation="sdpa").eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 24))
    with torch.inference_mode():
        masked = model(input_ids=ids, use_cache=False).logits
        with unmasked_causal_attention(model):
            assert model.config._attn_implementation != "sdpa"
            unmasked = model(input_ids=ids, use_cache=False).logits
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(unmasked, masked)
