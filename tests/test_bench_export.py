"""CPU tests of the 2:4 benchmark plumbing and the sparse-24-bitmask export (no GPU needed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from conftest import build_tiny_llama
from wandapp.adapter import DecoderAdapter
from wandapp.errors import WandappError
from wandapp.masks import follows_nm
from wandapp.sparse24.export import compress_2of4, decompress_2of4, decompress_checkpoint, export_sparse24, pack_bits
from wandapp.sparse24.sparse_linear import NEVER, SparseLinear, choose_kernel
from wandapp.sparse24.sparsity import random_2of4_


def _prune_2of4(model):
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for lin in DecoderAdapter.from_model(model).all_linears().values():
            random_2of4_(lin.weight, gen)
    return model


def test_random_2of4_has_two_positive_zeros_per_group():
    w = random_2of4_(torch.empty(8, 32))
    assert follows_nm(w, 2, 4)
    assert ((w == 0).reshape(8, 8, 4).sum(-1) == 2).all()
    assert not torch.signbit(w[w == 0]).any()


def test_choose_kernel_sends_small_calls_to_dense():
    assert choose_kernel(1, 512) == "dense"
    assert choose_kernel(511, 512) == "dense"
    assert choose_kernel(512, 512) == "sparse"


def test_sparse_linear_on_cpu_is_dense_and_exact():
    lin = nn.Linear(32, 16, bias=True)
    with torch.no_grad():
        random_2of4_(lin.weight)
    sparse = SparseLinear(lin, min_sparse_tokens=1)
    x = torch.randn(3, 5, 32)
    assert sparse.kernel_for(8192) == "dense"  # no cuSPARSELt on CPU: never sparse
    assert torch.equal(sparse(x), lin(x))


def test_sparse_linear_refuses_non_2of4():
    with pytest.raises(WandappError, match="not 2:4"):
        SparseLinear(nn.Linear(32, 16), min_sparse_tokens=NEVER)


def test_compress_round_trip_and_packbits_layout():
    w = random_2of4_(torch.empty(16, 40, dtype=torch.float16))
    w[0, :4] = torch.tensor([0.0, -0.0, 0.0, 1.0])  # 3 zeros in a group, one of them -0.0
    parts = compress_2of4(w)
    assert parts["compressed"].shape == (16, 20) and parts["compressed"].dtype == torch.float16
    assert parts["bitmask"].shape == (16, 5) and parts["bitmask"].dtype == torch.uint8
    assert parts["shape"].flatten().tolist() == [16, 40]
    back = decompress_2of4(**parts)
    expected = w.masked_fill(w == 0, 0.0)  # -0.0 becomes +0.0
    assert torch.equal(back.view(torch.int16), expected.view(torch.int16))  # bit for bit
    mask = torch.rand(7, 13) > 0.5
    assert np.array_equal(pack_bits(mask).numpy(), np.packbits(mask.numpy(), axis=-1, bitorder="little"))


def test_export_writes_format_and_round_trips(tmp_path):
    model = _prune_2of4(build_tiny_llama()).to(torch.float16)
    qconfig = export_sparse24(model, None, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    sc = config["quantization_config"]["sparsity_config"]
    assert config["quantization_config"]["quant_method"] == "compressed-tensors" and qconfig["sparsity_config"] == sc
    assert sc["format"] == "sparse-24-bitmask" and sc["sparsity_structure"] == "2:4"
    assert sc["targets"] == ["Linear"] and sc["ignore"] == ["lm_head"]
    assert 0 < sc["global_sparsity"] < 0.5  # the tiny model is mostly its dense embedding
    dense = decompress_checkpoint(tmp_path)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied to the embedding
        assert torch.equal(dense[name].view(torch.int16), tensor.view(torch.int16)), name


def test_export_refuses_weights_that_are_not_2of4(tmp_path):
    model = _prune_2of4(build_tiny_llama())
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.fill_(0.5)
    with pytest.raises(WandappError, match="layers.1.mlp.down_proj"):
        export_sparse24(model, None, tmp_path)


def test_export_bench_and_lora_share_one_2of4_check(tmp_path):
    """-0.0 counts as a zero and one group of 3 non-zeros breaks 2:4, alike for export, the bench's swap and
    LoRA's report: all three ask masks.follows_nm."""
    from wandapp import lora
    from wandapp.sparse24 import end_to_end

    model = _prune_2of4(build_tiny_llama())
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.weight[0, 4:8] = torch.tensor([-0.0, 0.0, 1.0, 2.0])  # still 2:4
    assert lora.nm_patterns(model)["2:4"]
    with torch.no_grad():
        model.model.layers[0].self_attn.q_proj.weight[0, :4] = torch.tensor([1.0, 2.0, 3.0, 0.0])  # 3 of 4
    q = model.model.layers[0].self_attn.q_proj
    assert not follows_nm(q.weight, 2, 4) and not lora.nm_patterns(model)["2:4"]
    with pytest.raises(WandappError, match="layers.0.self_attn.q_proj"):
        export_sparse24(model, None, tmp_path)
    with pytest.raises(WandappError, match="not 2:4"):
        SparseLinear(q)
    report = end_to_end.swap_in_sparse_linears(model, lambda out, inp: (1, 0, 1, None), reference=True)
    assert report["layers.0.self_attn.q_proj"] == "dense (not 2:4)"
    assert sum(v.startswith("sparse") for v in report.values()) == len(report) - 1


def test_bench_without_gpu_records_skipped(tmp_path, tiny_llama_dir):
    from wandapp.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", "--model", str(tiny_llama_dir), "--output", str(out), "--device", "cpu"]) == 0
    result = json.loads(out.read_text())
    assert result["skipped"] is True and result["reason"] == "no CUDA device"
    assert result["schema_version"] == 3 and "torch" in result["environment"]


@pytest.mark.parametrize("args,message", [
    (["--model", "/no/such/model"], "model not found"),
    (["--dtype", "float32"], "float16 or bfloat16"),
])
def test_bench_bad_input_fails_even_without_gpu(tmp_path, tiny_llama_dir, capsys, args, message):
    from wandapp.cli import main

    out = tmp_path / "bench.json"
    argv = ["bench", "--model", str(tiny_llama_dir), "--output", str(out), "--device", "cpu", *args]
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]  # (job_log's start/end aside)
    assert len(errors) == 1 and message in errors[0] and not out.exists()


def test_policy_from_sweep_records():
    from wandapp.sparse24.runner import make_policy

    recs = [dict(out_features=8, in_features=4, tokens=t, speedup=s)
            for t, s in ((1, 0.3), (512, 0.9), (2048, 1.3), (8192, 1.5))]
    recs += [dict(out_features=4, in_features=4, tokens=t, speedup=0.8) for t in (1, 8192)]
    policy, crossover = make_policy(recs, {((8, 4), 2048): (3, 2, "sparseB")})
    assert policy(8, 4) == (2048, 3, 2, "sparseB")
    assert policy(4, 4)[1:] == (0, 1, "sparseA+y_t")  # untuned shapes keep torch's layout
    assert policy(4, 4)[0] == NEVER and crossover == {"8x4": 2048, "4x4": None}


def test_fused_mlp_policy_goes_sparse_where_both_of_its_shapes_do():
    from wandapp.sparse24.runner import DEFAULT_MLP_CHOICE, make_mlp_policy, mlp_dims

    assert mlp_dims({"q_proj": (64, 64), "gate_proj": (176, 64), "down_proj": (64, 176)}) == (64, 176)
    assert mlp_dims({"q_proj": (64, 64)}) is None
    best = {2048: ((25, 1, "sparseA+y_t"), (37, 1, "sparseA+x_t+y_t")), 8192: ((0, 1, "sparseB+y_t"),) * 2}
    policy = make_mlp_policy({"176x64": 1024, "64x176": 2048}, best)
    assert policy(64, 176) == (2048, *best[2048])  # the later crossover; the choice tuned nearest to it
    assert make_mlp_policy({"176x64": 4096, "64x176": 8192}, best)(64, 176) == (8192, *best[8192])
    assert make_mlp_policy({"176x64": 1024, "64x176": None}, best)(64, 176) == (NEVER, *DEFAULT_MLP_CHOICE)


def test_speedups_compare_eager_with_eager_and_compiled_with_compiled():
    from wandapp.sparse24.runner import _speedups

    rows = [dict(kernel=k, compiled=c, batch=1, prompt_len=2048, ms=ms)
            for k, c, ms in (("dense", False, 60.0), ("dense", True, 45.0), ("sparse", False, 50.0),
                             ("sparse", True, 30.0))]
    assert _speedups(rows, "ms", lower_is_better=True) == [
        dict(batch=1, prompt_len=2048, compiled=False, speedup=1.2),
        dict(batch=1, prompt_len=2048, compiled=True, speedup=1.5)]


def test_cutlass_context_says_why_it_is_not_used_on_a_cpu():
    from wandapp.sparse24.runner import cutlass_context

    logged = []
    ctx, status = cutlass_context(torch.device("cpu"), torch.float16, "auto", logged.append)
    assert ctx is None and status.startswith("not used: not a Hopper GPU") and logged
    assert cutlass_context("cpu", torch.float16, "off") == (None, "off")
    with pytest.raises(WandappError, match="--cutlass on: not a Hopper GPU"):
        cutlass_context(torch.device("cpu"), torch.float16, "on")


def test_tune_mlp_takes_both_products_from_the_faster_library(monkeypatch):
    from wandapp.sparse24 import runner

    cut = "cutlass/256x128x128_c1x1_coop/swizzle1/along_m"
    times = {  # (product, layout) -> ms: cuSPARSELt wins gate_up alone, CUTLASS wins the pair
        ("gate_up (fused)", "sparseA+y_t"): 1.0, ("gate_up (fused)", cut): 1.1,
        ("down", "sparseA+x_t+y_t"): 0.9, ("down", cut): 0.5}

    def fake_tune(lt, name, shape, tokens, dtype, device, split_ks, layouts=None, as_run=True, cutlass=None):
        assert not as_run and cutlass == "ctx"
        recs = [dict(layout=lay, alg_id=0, split_k=1, sparse_ms=ms) for (n, lay), ms in times.items() if n == name]
        return sorted(recs, key=lambda r: r["sparse_ms"])

    monkeypatch.setattr(runner, "tune_algorithms", fake_tune)
    best = runner.tune_mlp(None, 64, 176, torch.float16, "cpu", (2048,), log=lambda m: None, cutlass="ctx")
    assert best == {2048: ((0, 1, cut), (0, 1, cut))}
    times[("down", cut)] = 0.95
    best = runner.tune_mlp(None, 64, 176, torch.float16, "cpu", (2048,), log=lambda m: None, cutlass="ctx")
    assert best == {2048: ((0, 1, "sparseA+y_t"), (0, 1, "sparseA+x_t+y_t"))}


def test_crossover_needs_sparse_to_win_as_product_and_as_layer():
    from wandapp.sparse24.linear_sweep import crossover_tokens

    recs = [dict(tokens=t, speedup=s, layer_speedup=l) for t, s, l in
            ((1, 0.96, 1.10), (16, 1.12, 1.12), (2048, 1.4, 1.3), (8192, 1.5, 1.01))]
    assert crossover_tokens(recs) is None  # the copy makes the layer lose at 8192
    recs[-1]["layer_speedup"] = 1.4
    assert crossover_tokens(recs) == 16  # 1 token: the bare product loses, whatever the layer timing says


def test_every_timer_reads_one_event_pair_around_the_calls(monkeypatch):
    """event_ms brackets `repeat` calls with two events and waits for the second; the eager and replay medians are
    built on it (a fake clock that the timed fn advances stands in for the GPU's)."""
    from wandapp.sparse24 import timing

    clock, log = [0.0], []

    class FakeEvent:
        def __init__(self, enable_timing):
            assert enable_timing

        def record(self):
            self.t = clock[0]
            log.append("record")

        def synchronize(self):
            log.append("sync")

        def elapsed_time(self, end):
            return end.t - self.t

    def work(ms):
        def fn():
            clock[0] += ms
            log.append("call")
        return fn

    monkeypatch.setattr(timing.torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(timing.torch.cuda, "synchronize", lambda device=None: None)
    assert timing.event_ms(work(2.0), repeat=3) == 6.0
    assert log == ["record", "call", "call", "call", "record", "sync"]
    steps = iter([1.0, 5.0, 2.0, 9.0, 3.0])
    assert timing.median_ms_eager(lambda: work(next(steps, 0.0))(), "cpu", warmup=0, iters=5) == 3.0

    class Graph:
        replay = staticmethod(work(4.0))

    assert timing.replay_median_ms(Graph, "cpu", iters=3, calls=4, warmup=1) == 1.0


def test_interleaved_medians_alternate_the_fns_and_take_each_median(monkeypatch):
    from wandapp.sparse24 import timing

    calls, times = [], {"a": iter([3.0, 1.0, 2.0]), "b": iter([5.0, 9.0, 4.0])}

    def fake_replay(graph, device, iters, calls_per_replay=1):
        calls.append(graph)
        return next(times[graph])

    monkeypatch.setattr(timing, "capture_graph", lambda fn, device, calls: fn())  # a "graph" is its fn's name
    monkeypatch.setattr(timing, "replay_median_ms", fake_replay)
    result = timing.interleaved_medians({"a": lambda: "a", "b": lambda: "b"}, "cpu", rounds=3)
    assert calls == ["a", "b"] * 3 and result == {"a": 2.0, "b": 5.0}


def _fake_graphs(monkeypatch, runner):
    """capture_prefill / replay / decode stand-ins: a graph is its (model kind, batch, length); dense 10 ms,
    sparse 8."""
    from wandapp.sparse24 import timing
    from wandapp.sparse24.sparse_linear import SparseLinear

    replayed = []

    def capture(model, batch, length, device):
        kind = "sparse" if any(isinstance(m, SparseLinear) for m in model.modules()) else "dense"
        return (kind, batch, length), None

    def replay(graph, device, iters, calls=1):
        replayed.append(graph)
        return 10.0 if graph[0] == "dense" else 8.0

    monkeypatch.setattr(runner, "capture_prefill", capture)
    monkeypatch.setattr(timing, "replay_median_ms", replay)
    monkeypatch.setattr(runner, "decode_tokens_per_s", lambda *a: 100.0)
    return replayed


@pytest.mark.parametrize("compile_fails", [False, True])
def test_end_to_end_times_each_case_dense_and_sparse_alternately(monkeypatch, compile_fails):
    from contextlib import contextmanager

    from wandapp.sparse24 import runner
    from wandapp.sparse24.synthetic import prune_2of4_

    replayed = _fake_graphs(monkeypatch, runner)
    if compile_fails:
        @contextmanager
        def broken(model):
            raise RuntimeError("no compiler")
            yield

        monkeypatch.setattr(runner, "compiled_blocks", broken)
    model = prune_2of4_(build_tiny_llama()).eval()
    rows = runner.end_to_end(model, lambda o, i: (16, 0, 1, None), "cpu", ((1, 32), (2, 16)), ((1, 8),),
                             log=lambda m: None, compile_blocks=True)
    pairs = [replayed[i:i + 2] for i in range(0, len(replayed), 2)]
    assert all(d[0] == "dense" and s[0] == "sparse" and d[1:] == s[1:] for d, s in pairs)
    assert len(replayed) == 3 * 2 * 2 * (1 if compile_fails else 2)  # rounds x cases x models x (eager, compiled)
    assert {r["compiled"] for r in rows["prefill"]} == ({False} if compile_fails else {False, True})
    assert all(abs(r["speedup"] - 1.25) < 1e-9 for r in rows["prefill_speedup"])
    assert ("compile_error" in rows) == compile_fails and ("compiled_logits_rel_err" in rows) != compile_fails
    assert rows["swapped_linears"] > 0 and rows["logits_rel_err"] < 1e-5  # CPU: the swapped modules run dense
    assert [r["kernel"] for r in rows["decode"]] == ["dense", "sparse"]
    assert not any(isinstance(m, SparseLinear) for m in model.modules())  # restored
