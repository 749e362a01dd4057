"""What only runs on CUDA, against the CPU path or an independent computation (skipped without a GPU).

Written against the mutation survivors that no CPU test can see (docs/testing.md, "CPU-only survivors"): device
arguments of helper tensors, activations kept on the CPU (`prune --activations-on-cpu`), the CUDA-graph column
loop of SparseGPT, and Wanda++'s bfloat16 compute copy of its float32 master block. On the GPU machine:
`PYTHONPATH=$PWD python -m pytest -q tests/test_cuda_paths.py`; scripts/mutation_cuda.sh runs the mutants here.
"""

import copy

import pytest
import torch

from conftest import build_tiny_llama
from wandapp.adapter import DecoderAdapter
from wandapp.masks import SparsityPattern, follows_nm
from wandapp.methods import build_method
from wandapp.methods.sparsegpt import sparsegpt_prune
from wandapp.methods.stats import ColumnNorm
from wandapp.methods.wanda import wanda_score
from wandapp.walker import BlockContext, capture_block_inputs, prune_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CPU, CUDA = torch.device("cpu"), torch.device("cuda")
# RO with small steps: CPU and CUDA float32 runs stay within float32 noise of each other
SMALL_RO = dict(ro_lr=1e-5, ro_samples=4, ro_rounds=2, track_error=True)
HYPER = {"wanda": {}, "sparsegpt": {}, "wanda++": dict(SMALL_RO, precision="fp32"),
         "wanda++-ro": dict(SMALL_RO, precision="fp32"), "wanda++-rgs": dict(precision="fp32")}


def token_ids(n=8, t=64, seed=0):
    return torch.randint(0, 49152, (n, t), generator=torch.Generator().manual_seed(seed))


def linears(model):
    return DecoderAdapter.from_model(model).all_linears()


@pytest.mark.parametrize("store", ["cpu", "cuda"])
@pytest.mark.parametrize("method", list(HYPER))
def test_a_cuda_prune_equals_the_cpu_prune(method, store):
    """float32 on CUDA (block offloaded, calibration activations on `store`) gives the CPU's masks and weights up to
    float32 noise, and Wanda++'s logged errors to 1e-3: every helper tensor and every stage's activations on the
    right device (a CPU tensor met by a CUDA block raises), no autocast where fp32 is asked."""
    model, ids = build_tiny_llama(), token_ids()
    runs = {}
    for side, device, where in (("cpu", CPU, None), ("cuda", CUDA, store)):
        m = copy.deepcopy(model)
        logs = prune_model(m, ids, build_method(method, SparsityPattern.parse("2:4"), **HYPER[method]), device,
                           store=where)
        runs[side] = (m, logs)
    (cpu_model, cpu_logs), (cuda_model, cuda_logs) = runs["cpu"], runs["cuda"]
    for (name, a), b in zip(linears(cuda_model).items(), linears(cpu_model).values()):
        assert a.weight.device.type == "cpu" and follows_nm(a.weight, 2, 4), name
        assert ((a.weight == 0) == (b.weight == 0)).float().mean() > 0.995, name
        assert (a.weight - b.weight).norm() <= 1e-3 * b.weight.norm(), name
    for got, want in zip(cuda_logs, cpu_logs):
        assert got.get("staged_statistics") == want.get("staged_statistics")
        for r_got, r_want in zip(got.get("ro_rounds", []), want.get("ro_rounds", [])):
            for key in r_want:
                assert r_got[key] == pytest.approx(r_want[key], rel=1e-3), key


def cuda_context(model, ids, dtype=None, micro_batch=4, store=CUDA):
    """Block 0 of `model` on the GPU with its calibration inputs on `store`."""
    adapter = DecoderAdapter.from_model(model)
    hidden, kwargs = capture_block_inputs(model, adapter, ids, CUDA, store)
    block = copy.deepcopy(adapter.blocks[0]).to(CUDA, dtype)
    return BlockContext(0, block, adapter.linears(block), hidden, kwargs, CUDA, micro_batch=micro_batch)


def test_staged_outputs_and_regional_gradient_targets_stay_on_the_compute_device():
    """With activations on the GPU, the staged pass's outputs and the regional gradient's dense targets are made
    on the GPU (not in CPU memory), and equal a plain forward of the block."""
    ctx = cuda_context(build_tiny_llama(), token_ids())
    with torch.no_grad():
        want = ctx.outputs()
    out = ctx.prune_in_order(ColumnNorm, lambda names, stats: None, outputs=True)
    assert ctx.log["staged_statistics"] and out.device == ctx.inputs.device
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    method = build_method("wanda++", SparsityPattern.parse("2:4"), precision="fp32")
    _, targets = method.regional_gradient(ctx, ctx.block, keep_outputs=True)
    assert targets.device == ctx.inputs.device and targets.dtype == torch.float32
    torch.testing.assert_close(targets, want.float(), rtol=1e-5, atol=1e-5)


def test_activations_on_the_cpu_keep_the_staged_pass_off_the_gpu():
    """With the calibration activations on the CPU, every stage's activations of all samples are kept there: the
    staged pass with outputs holds a few micro-batches on the GPU, not a stage's worth (16 MB here)."""
    model, ids = build_tiny_llama(), token_ids(n=512, t=128)
    for _ in range(2):  # the first pass also allocates cuBLAS workspaces
        ctx = cuda_context(model, ids, store=CPU)
        stage = ctx.inputs.numel() * ctx.inputs.element_size()
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = ctx.prune_in_order(ColumnNorm, lambda names, stats: None, outputs=True)
        peak = torch.cuda.max_memory_allocated() - before
    assert ctx.log["staged_statistics"] and out.device == CPU
    assert peak < stage / 4, (peak, stage)


def test_a_failed_graph_recording_warns_once_and_runs_eagerly(monkeypatch, caplog):
    """If CUDA-graph recording fails, the loop says so once (not once per block) and runs eagerly, with the same
    result as the plain algorithm."""
    def broken():
        raise RuntimeError("no graphs here")

    monkeypatch.setattr(torch.cuda, "CUDAGraph", broken)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(800, 384, generator=g, dtype=torch.float64)
    H, W = 2 / 2 * X.T @ X, torch.randn(16, 384, generator=g, dtype=torch.float64)
    pattern, info = SparsityPattern.parse("2:4"), {}
    got_w, got_mask = sparsegpt_prune(W.to(CUDA), H.to(CUDA), pattern, info=info)
    want_w, want_mask = plain_reference(W, H, pattern)
    assert info == {"column_loop": "eager"}
    assert [r.getMessage() for r in caplog.records] == [
        "SparseGPT: CUDA graph recording failed (no graphs here); running the column loop eagerly"]
    assert torch.equal(got_mask.cpu(), want_mask)
    torch.testing.assert_close(got_w.cpu(), want_w, rtol=1e-9, atol=1e-9)


def test_the_regional_gradient_of_a_bf16_copy_accumulates_in_float32():
    """G = sqrt(mean_n g_n^2) of a bfloat16 compute copy, against the same per-sample gradients summed in float64
    (math attention: deterministic backward). Summed in bfloat16, 32 terms would be off by about 1e-2."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    ctx = cuda_context(build_tiny_llama(), token_ids(n=32, t=32))
    method = build_method("wanda++", SparsityPattern.parse("2:4"))  # precision bf16: the compute copy
    ctx.block.float()
    work = method.compute_copy(ctx)
    assert work is not ctx.block and next(work.parameters()).dtype == torch.bfloat16
    with sdpa_kernel(SDPBackend.MATH):
        G, _ = method.regional_gradient(ctx, work)
        weights = [work.get_submodule(n).weight.requires_grad_(True) for n in ctx.linears]
        sums = [torch.zeros_like(w, dtype=torch.float64) for w in weights]
        with torch.enable_grad():
            for x in ctx.batches(size=1):
                for s, g in zip(sums, torch.autograd.grad(ctx.run(x, work).float().norm(), weights)):
                    s += g.double().square()
    for name, s in zip(ctx.linears, sums):
        want = (s / ctx.nsamples).sqrt()
        assert G[name].dtype == torch.float32
        assert (G[name].double() - want).norm() <= 1e-5 * want.norm(), name


@pytest.mark.parametrize("method", ["wanda++", "wanda++-ro"])
def test_ro_on_a_bf16_copy_measures_the_copy_it_trains(method):
    """fp16 model, bfloat16 compute copy, one sample per batch (so every pass runs the same kernels): with nothing
    pruned and steps that vanish, the copy's error against its own dense outputs is exactly 0 before and after
    each round (targets from the copy in float32, errors measured on the copy, not on the float32 master). At
    2:4 the in-loop prune masks the copy too: its error is > 0. Afterwards nothing is left trainable, the model
    is fp16 on the CPU again."""
    errors = {}
    for sparsity in ("0.0", "2:4"):
        model = build_tiny_llama().half()
        run = build_method(method, SparsityPattern.parse(sparsity), ro_lr=1e-30, ro_samples=4, ro_rounds=2,
                           track_error=True)
        logs = prune_model(model, token_ids(), run, CUDA, micro_batch=1)
        errors[sparsity] = [r for log in logs for r in log["ro_rounds"]]
        assert not any(p.requires_grad for p in DecoderAdapter.from_model(model).blocks.parameters())
        assert all(p.device.type == "cpu" and p.dtype == torch.float16 for p in model.parameters())
    assert all(r["error_pruned"] == 0 and r["error_ro"] == 0 for r in errors["0.0"]), errors["0.0"]
    assert all(r["error_pruned"] > 0 for r in errors["2:4"]), errors["2:4"]


def test_wanda_score_takes_norms_from_another_device():
    g = torch.Generator().manual_seed(0)
    w, norm = torch.randn(6, 8, generator=g), torch.rand(8, generator=g)
    assert torch.equal(wanda_score(w.to(CUDA), norm).cpu(), wanda_score(w, norm))


def plain_reference(W, H, pattern):
    from test_references import plain_sparsegpt

    return plain_sparsegpt(W.cpu(), H.cpu(), pattern)


@pytest.mark.parametrize("sparsity,cols", [("0.5", 320), ("2:4", 384), ("4:8", 384)])
def test_sparsegpt_on_cuda_replays_its_graph_and_equals_the_plain_reference(sparsity, cols):
    """float64 on CUDA: the column loop recorded as a CUDA graph and replayed for later 128-column blocks (a
    partial last block eagerly) gives the plain float64 algorithm's mask and weights."""
    g = torch.Generator().manual_seed(cols)
    X = torch.randn(1500, cols, generator=g, dtype=torch.float64)
    X = X @ (torch.eye(cols, dtype=torch.float64) + 0.3 * torch.randn(cols, cols, generator=g, dtype=torch.float64)
             / cols**0.5)
    H = 2 / 3 * X.T @ X
    W = torch.randn(24, cols, generator=g, dtype=torch.float64)
    pattern, info = SparsityPattern.parse(sparsity), {}
    got_w, got_mask = sparsegpt_prune(W.to(CUDA), H.to(CUDA), pattern, info=info)
    want_w, want_mask = plain_reference(W, H, pattern)
    assert info == {"column_loop": "cuda-graph"} and got_w.is_cuda
    assert torch.equal(got_mask.cpu(), want_mask)
    torch.testing.assert_close(got_w.cpu(), want_w, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sparsity", ["2:4", "0.5"])
def test_sparsegpt_ties_on_cuda_go_to_the_lower_column_as_on_the_cpu(sparsity):
    """With H = I, no damping (so the inverse factor is I exactly on both devices; with the default damping
    cuSOLVER's diagonal varies in the last bit and breaks the ties) and weights in {1, 2, 3}, scores tie
    everywhere; CUDA's masks are the CPU's stable ones."""
    W = torch.randint(1, 4, (64, 256), generator=torch.Generator().manual_seed(0)).float()
    H = torch.eye(256)
    pattern = SparsityPattern.parse(sparsity)
    want = sparsegpt_prune(W, H, pattern, percdamp=0.0)[1]
    assert torch.equal(sparsegpt_prune(W.to(CUDA), H.to(CUDA), pattern, percdamp=0.0)[1].cpu(), want)

