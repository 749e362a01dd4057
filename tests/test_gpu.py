"""Checks that need a CUDA device (skipped elsewhere): run them on the GPU machine with `pytest tests/test_gpu.py`."""

import os

import pytest
import torch

from wandapp.masks import nm_mask
from wandapp.methods.rmsprop import FusedRMSprop, rmsprop, triton

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.skipif(triton is None, reason="needs Triton")
def test_fused_rmsprop_matches_torch():
    torch.manual_seed(0)
    shapes = [(256, 384), (1000, 3), (7,)]
    ours = [torch.nn.Parameter(torch.randn(s, device="cuda")) for s in shapes]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    fused, plain = FusedRMSprop(ours, lr=3e-4), torch.optim.RMSprop(ref, lr=3e-4)
    for _ in range(20):
        for a, b in zip(ours, ref):
            g = torch.randn_like(a)
            a.grad, b.grad = g.clone(), g.clone()
        fused.step()
        plain.step()
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@cuda
@pytest.mark.skipif(triton is None, reason="needs Triton")
def test_fused_rmsprop_with_bf16_copies_matches_the_mirrored_one():
    torch.manual_seed(0)
    masters = [torch.randn(300, 200, device="cuda"), torch.randn(33, device="cuda")]
    runs = []
    for fused in (True, False):
        ps = [m.clone() for m in masters]
        cs = [p.to(torch.bfloat16).requires_grad_(True) for p in ps]
        opt = rmsprop(ps, 1e-3, copies=cs, fused=fused)
        gen = torch.Generator(device="cuda").manual_seed(1)
        for _ in range(10):
            for c in cs:
                c.grad = torch.randn(c.shape, device="cuda", generator=gen).to(torch.bfloat16)
            opt.step()
        runs.append((ps, cs))
    (fused_ps, fused_cs), (plain_ps, _) = runs
    for p1, c1, p2 in zip(fused_ps, fused_cs, plain_ps):
        torch.testing.assert_close(p1, p2, rtol=1e-5, atol=1e-6)
        assert torch.equal(c1, p1.to(torch.bfloat16))


@cuda
def test_nm_mask_same_on_cuda_and_cpu():
    score = torch.round(torch.randn(64, 256) * 2) / 2
    assert torch.equal(nm_mask(score.cuda(), 2, 4).cpu(), nm_mask(score, 2, 4))


@cuda
def test_wanda_plus_plus_on_cuda_offloads_and_keeps_the_pattern():
    from conftest import build_tiny_llama
    from wandapp.adapter import DecoderAdapter
    from wandapp.masks import SparsityPattern, follows_nm
    from wandapp.methods import build_method
    from wandapp.walker import prune_model

    model = build_tiny_llama().half()
    ids = torch.randint(0, 49152, (8, 64), generator=torch.Generator().manual_seed(0))
    method = build_method("wanda++", SparsityPattern.parse("2:4"), ro_lr=1e-3, ro_samples=4, ro_rounds=2,
                          track_error=True)
    logs = prune_model(model, ids, method, torch.device("cuda"))
    for name, lin in DecoderAdapter.from_model(model).all_linears().items():
        assert lin.weight.device.type == "cpu" and lin.weight.dtype == torch.float16, name
        assert follows_nm(lin.weight, 2, 4), name
    for log in logs:
        assert log["staged_statistics"]
        assert all(r["error_ro"] < r["error_pruned"] for r in log["ro_rounds"]), log["ro_rounds"]


@cuda
def test_stages_match_moves_inputs_stored_on_the_cpu_to_the_device():
    """Inputs kept on the CPU (a long calibration set) while the block computes on CUDA: the staged-forward check
    must bring its one sample to the device (walker `_stages_match` 4, a CPU-only mutant, drops the move)."""
    from conftest import build_tiny_llama
    from wandapp.adapter import BlockParts
    from wandapp.walker import BlockContext

    device = torch.device("cuda")
    model = build_tiny_llama(num_hidden_layers=1).to(device)
    block = model.model.layers[0]
    x = torch.randn(3, 16, model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    kwargs = {"position_embeddings": model.model.rotary_emb(x.to(device), torch.arange(16, device=device)[None])}
    ctx = BlockContext(0, block, {}, x, kwargs, device)
    assert ctx.inputs.device.type == "cpu"
    assert ctx._stages_match(block, BlockParts.of(block))


@cuda
def test_block_shuttle_round_trip_keeps_cpu_tensors_and_values():
    from torch import nn

    from wandapp.offload import BlockShuttle

    block = nn.Sequential(nn.Linear(33, 17).half(), nn.LayerNorm(17))  # mixed dtypes, odd sizes
    block.register_buffer("steps", torch.arange(5))
    before = {k: v.clone() for k, v in block.state_dict().items()}
    storages = {k: v.data_ptr() for k, v in block.state_dict().items()}
    shuttle = BlockShuttle(torch.device("cuda"))
    shuttle.to_device(block)
    assert all(t.is_cuda for t in block.state_dict().values())
    with torch.no_grad():
        block[0].weight.mul_(2)
    shuttle.home(block)
    after = block.state_dict()
    assert all(t.device.type == "cpu" for t in after.values())
    assert {k: v.data_ptr() for k, v in after.items()} == storages  # refilled in place
    torch.testing.assert_close(after["0.weight"], before["0.weight"] * 2)
    assert torch.equal(after["1.weight"], before["1.weight"]) and torch.equal(after["steps"], before["steps"])


@cuda
@pytest.mark.skipif(not torch.cuda.is_available() or not torch.backends.cusparselt.is_available(),
                    reason="needs cuSPARSELt")
def test_every_cusparselt_layout_it_accepts_computes_x_times_w_transposed():
    from wandapp.sparse24.cusparselt import DEFAULT_LAYOUTS, TORCH_LAYOUT, CusparseLt, Layout, parse_layouts
    from wandapp.sparse24.sparsity import random_2of4_

    lt = CusparseLt(torch.device("cuda"))
    gen = torch.Generator("cuda").manual_seed(0)
    w = random_2of4_(torch.empty(256, 128, dtype=torch.float16, device="cuda"), gen)
    x = torch.randn(48, 128, dtype=torch.float16, device="cuda", generator=gen)
    ref = torch.nn.functional.linear(x, w).float()
    accepted = set()
    for layout in Layout.every():
        try:
            y = lt.linear(lt.compress(w, layout), x[:45], 256, layout=layout)  # 45: padded to 48 inside
        except RuntimeError as e:
            assert "not supported" in str(e) or "invalid" in str(e), (layout.name(), e)
            continue
        accepted.add(layout)
        assert y.shape == (45, 256)
        torch.testing.assert_close(y.float(), ref[:45], rtol=2e-3, atol=2e-2, msg=layout.name())
    # the layouts the benchmark tunes over by default, torch's among them, must run: a rejection is a failure
    required = set(parse_layouts(DEFAULT_LAYOUTS)) | {TORCH_LAYOUT}
    assert required <= accepted, sorted(l.name() for l in required - accepted)


@cuda
def test_tiled_transpose_copy_matches_torch():
    from wandapp.sparse24.transpose import contiguous

    gen = torch.Generator("cuda").manual_seed(0)
    for rows, cols in ((4096, 2048), (100, 333), (48, 45)):
        stored = torch.randn(cols, rows + 3, dtype=torch.float16, device="cuda", generator=gen)
        y = stored[:, :rows].t()  # column-major view with a row stride past its width, as a padded product gives
        out = contiguous(y)
        assert out.is_contiguous() and torch.equal(out, y.contiguous())


cslt = pytest.mark.skipif(not torch.cuda.is_available() or not torch.backends.cusparselt.is_available(),
                          reason="needs cuSPARSELt")


@cuda
@cslt
def test_fused_gated_mlp_on_cusparselt_matches_dense():
    from wandapp.sparse24.mlp_sweep import GatedMLP
    from wandapp.sparse24.sparse_mlp import SparseGatedMLP
    from wandapp.sparse24.sparsity import random_2of4_

    gen = torch.Generator("cuda").manual_seed(0)
    shapes = ((384, 256), (384, 256), (256, 384))
    mlp = GatedMLP(*(random_2of4_(torch.empty(s, dtype=torch.float16, device="cuda"), gen) for s in shapes))
    fused = SparseGatedMLP(mlp, min_sparse_tokens=16)
    x = torch.randn(2, 45, 256, dtype=torch.float16, device="cuda", generator=gen)  # 90 tokens: padded to 96
    with torch.inference_mode():
        torch.testing.assert_close(fused(x).float(), mlp(x).float(), rtol=2e-3, atol=2e-2)


@cuda
@cslt
def test_compiled_sparse_model_on_cusparselt_matches_eager():
    # Under torch.compile the sparse outputs stay transposed views that inductor reads in the next kernel.
    from conftest import build_tiny_llama
    from wandapp.sparse24.end_to_end import compiled_blocks, swap_in_sparse_linears
    from wandapp.sparse24.synthetic import prune_2of4_

    model = prune_2of4_(build_tiny_llama().to("cuda", torch.float16)).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 64), device="cuda")
    swap_in_sparse_linears(model, lambda o, i: (16, 0, 1, "sparseA+y_t"),
                           lambda h, i: (16, (0, 1, "sparseA+y_t"), (0, 1, "sparseA+x_t+y_t")))
    with torch.inference_mode():
        eager = model(input_ids=ids, use_cache=False).logits.float()
        with compiled_blocks(model):
            compiled = model(input_ids=ids, use_cache=False).logits.float()
    assert float((compiled - eager).norm() / eager.norm()) < 1e-2


def _cutlass_or_skip():
    from wandapp.errors import WandappError
    from wandapp.sparse24 import cutlass_sparse as cs

    if not (torch.cuda.is_available() and cs.available(torch.device("cuda"))):
        pytest.skip("needs a Hopper GPU")
    if not os.environ.get(cs.LIBRARY_ENV):  # no prebuilt library: the build needs nvcc and the CUTLASS headers
        try:
            cs.find_nvcc()
            cs.cutlass_include_dirs()
        except WandappError as e:
            pytest.skip(f"no CUTLASS toolchain: {e}")
    return cs.CutlassSparse(torch.device("cuda"))  # a compile or link error fails the test, it is not a skip


def test_cutlass_sparse_products_match_dense_in_every_config():
    from wandapp.sparse24.linear_sweep import make_operands, rel_error

    lib = _cutlass_or_skip()
    gen = torch.Generator("cuda").manual_seed(0)
    # 512 inputs: an even number of K tiles for both families; 576: odd (5 of 128, the last one partial; 9 of 64)
    for in_features in (512, 576):
        weight, x = make_operands((384, in_features), 200, torch.float16, torch.device("cuda"), gen)
        compressed = {family: lib.compress(weight, family) for family in set(lib.families)}
        for tokens in (1, 7, 200):  # decode, a ragged count, several tiles
            ref = torch.nn.functional.linear(x[:tokens], weight)
            for choice in lib.choices(swizzles=(1, 2), rasters=(1, 2)):
                y = lib.linear(*compressed[lib.families[choice.config]], x[:tokens], 384, choice)
                assert y.shape == (tokens, 384) and y.is_contiguous()
                assert rel_error(y, ref) < 1e-3, (in_features, tokens, choice.name())


def test_model_on_cutlass_kernels_matches_dense_eager_and_compiled():
    from conftest import build_tiny_llama
    from wandapp.sparse24.end_to_end import compiled_blocks, restore_dense_linears, swap_in_sparse_linears
    from wandapp.sparse24.synthetic import prune_2of4_

    _cutlass_or_skip()
    model = prune_2of4_(build_tiny_llama().to("cuda", torch.float16)).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 64), device="cuda")
    choice = "cutlass/256x128x128_c1x1_coop/swizzle1/along_m"
    with torch.inference_mode():
        dense = model(input_ids=ids, use_cache=False).logits.float()
        swap_in_sparse_linears(model, lambda o, i: (16, 0, 1, choice),
                               lambda h, i: (16, (0, 1, choice),
                                             (0, 1, "cutlass/128x256x64_c1x1_coop/swizzle2/along_n")))
        eager = model(input_ids=ids, use_cache=False).logits.float()
        with compiled_blocks(model):
            compiled = model(input_ids=ids, use_cache=False).logits.float()
        restore_dense_linears(model)
    for logits in (eager, compiled):
        assert float((logits - dense).norm() / dense.norm()) < 1e-2


@cuda
@cslt
def test_end_to_end_alternating_graphs_replay_after_the_swap():
    # The dense graphs are replayed after the sparse modules went in, the compiled pair inside one compile context.
    from conftest import build_tiny_llama
    from wandapp.sparse24.runner import end_to_end
    from wandapp.sparse24.synthetic import prune_2of4_

    model = prune_2of4_(build_tiny_llama().to("cuda", torch.float16)).eval()
    rows = end_to_end(model, lambda o, i: (16, 0, 1, "sparseA+y_t"), torch.device("cuda"), ((1, 64), (2, 32)),
                      ((1, 16),), decode_steps=4, log=lambda m: None,
                      mlp_policy=lambda h, i: (16, (0, 1, "sparseA+y_t"), (0, 1, "sparseA+x_t+y_t")))
    assert "compile_error" not in rows
    assert len(rows["prefill"]) == 8 and all(r["ms"] > 0 for r in rows["prefill"])
    assert len(rows["prefill_speedup"]) == 4 and rows["logits_rel_err"] < 1e-2
    assert rows["compiled_logits_rel_err"] < 1e-2


@cuda
@pytest.mark.parametrize("method", ["wanda", "sparsegpt", "float-and-back"])
def test_overlapped_block_copies_match_the_synchronous_ones(method):
    """Prefetch on a side stream and write-back on a worker thread: the same pruned weights, in the model's own
    CPU tensors, as BlockShuttle's synchronous copies (a tiny Llama, fp16, offloaded). float-and-back: a visit
    that swaps the block's tensors for float32 ones and back, as Wanda++ does (whose flash-attention backward
    is not bitwise deterministic, so it is not compared itself)."""
    import copy

    from conftest import build_tiny_llama
    from wandapp.masks import SparsityPattern
    from wandapp.methods import build_method
    from wandapp.offload import OverlappedShuttle
    from wandapp.walker import ResidentWeights, prune_model

    device = torch.device("cuda")
    model = build_tiny_llama(num_hidden_layers=4).half()
    ids = torch.randint(0, model.config.vocab_size, (8, 64), generator=torch.Generator().manual_seed(0))

    class FloatAndBack:
        name = "float-and-back"

        def prune_block(self, ctx):
            ctx.block.float()
            with torch.no_grad():
                for lin in ctx.linears.values():
                    lin.weight.mul_(0.9).add_(1e-3 * torch.tanh(ctx.outputs().float().mean()).to(device))
            ctx.block.half()

    runs = []
    for overlap in (False, True):
        m = copy.deepcopy(model)
        ptrs = {n: p.data_ptr() for n, p in m.named_parameters()}
        weights = ResidentWeights(device, offload=True, overlap=overlap)
        assert isinstance(weights.shuttle, OverlappedShuttle) == overlap
        run = FloatAndBack() if method == "float-and-back" else build_method(method, SparsityPattern.parse("2:4"))
        prune_model(m, ids, run, device, weights=weights)
        assert all(p.device.type == "cpu" for p in m.parameters())
        assert {n: p.data_ptr() for n, p in m.named_parameters()} == ptrs
        runs.append(m)
    for (name, a), (_, b) in zip(runs[0].named_parameters(), runs[1].named_parameters()):
        assert torch.equal(a, b), name
