"""The walker's speed paths change no result: copies overlapped with compute (OverlappedShuttle, run here on the
CPU through the same code as on CUDA, without streams) and the skipped output pass of the last block."""

import copy

import pytest
import torch

from conftest import build_tiny_llama
from wandapp.masks import SparsityPattern
from wandapp.methods import build_method
from wandapp.offload import OverlappedShuttle
from wandapp.walker import ResidentWeights, prune_model, walk_blocks

CPU = torch.device("cpu")
RUNS = {
    "wanda": {},
    "sparsegpt": {},
    "wanda++": dict(ro_lr=1e-3, ro_samples=4, ro_rounds=2),
}


@pytest.fixture(scope="module")
def model_and_ids():
    model = build_tiny_llama(num_hidden_layers=3)
    ids = torch.randint(0, model.config.vocab_size, (6, 32), generator=torch.Generator().manual_seed(0))
    return model, ids


def storages(model):
    return {n: p.data_ptr() for n, p in model.named_parameters()}


@pytest.mark.parametrize("method", list(RUNS))
def test_overlapped_copies_give_the_same_weights_in_the_same_cpu_memory(model_and_ids, method):
    model, ids = model_and_ids
    plain, overlapped = copy.deepcopy(model), copy.deepcopy(model)
    make = lambda: build_method(method, SparsityPattern.parse("2:4"), **RUNS[method])  # noqa: E731
    prune_model(plain, ids, make(), CPU, weights=ResidentWeights(CPU, offload=True, overlap=False))
    before = storages(overlapped)
    weights = ResidentWeights(CPU, offload=True, overlap_on_cpu=True)
    assert isinstance(weights.shuttle, OverlappedShuttle)
    prune_model(overlapped, ids, make(), CPU, weights=weights)
    assert storages(overlapped) == before  # the model's CPU tensors were refilled, not replaced
    for (name, a), (_, b) in zip(plain.named_parameters(), overlapped.named_parameters()):
        assert torch.equal(a, b), name
    changed = [n for n, p in overlapped.named_parameters() if not torch.equal(p, dict(model.named_parameters())[n])]
    assert any("layers.2." in n for n in changed)  # the last block was pruned and written home too


def test_overlapped_copies_keep_what_a_method_made_of_a_tensor(model_and_ids):
    model, ids = model_and_ids
    results = []
    for weights in (ResidentWeights(CPU, overlap=False), ResidentWeights(CPU, overlap_on_cpu=True)):
        m = copy.deepcopy(model)

        def visit(ctx):  # a visit that leaves the block in another dtype and marks it
            ctx.block.double()
            with torch.no_grad():
                ctx.block.mlp.down_proj.weight.add_(ctx.index + 1)

        walk_blocks(m, ids, visit, CPU, weights=weights, last_outputs=False)
        results.append(m)
    for (name, a), (_, b) in zip(results[0].model.layers.named_parameters(),
                                 results[1].model.layers.named_parameters()):
        assert a.dtype == b.dtype == torch.float64 and a.device.type == "cpu" and torch.equal(a, b), name


def test_walk_without_last_outputs_skips_only_the_last_blocks_output_pass(model_and_ids):
    model, ids = model_and_ids
    m = copy.deepcopy(model)
    calls = {}
    blocks = m.model.layers
    for i, block in enumerate(blocks):
        block.register_forward_hook(lambda mod, a, out, i=i: calls.__setitem__(i, calls.get(i, 0) + 1))

    seen = []
    full = walk_blocks(m, ids, lambda ctx: seen.append(ctx.wants_outputs), CPU, micro_batch=2)
    assert seen == [True, True, True] and full.shape == (6, 32, m.config.hidden_size)
    assert calls == {0: 3, 1: 3, 2: 3}  # 6 samples in batches of 2: one output pass per block
    calls.clear()
    seen.clear()
    assert walk_blocks(m, ids, lambda ctx: seen.append(ctx.wants_outputs), CPU, micro_batch=2,
                       last_outputs=False) is None
    assert seen == [True, True, False] and calls == {0: 3, 1: 3}


def test_prune_model_output_is_unchanged_by_the_skipped_last_pass(model_and_ids):
    """Wanda++ makes its last block's outputs in its final prune pass: without them the weights are the same."""
    model, ids = model_and_ids
    method = build_method("wanda++", SparsityPattern.parse("2:4"), **RUNS["wanda++"])
    pruned = copy.deepcopy(model)
    prune_model(pruned, ids, method, CPU)

    kept = copy.deepcopy(model)
    logs = []

    def visit(ctx):
        ctx.wants_outputs = True  # the old walk: the last block's outputs made too
        method.prune_block(ctx)
        logs.append(ctx.next_inputs is not None)

    walk_blocks(kept, ids, visit, CPU)
    assert logs == [True, True, True]
    for (name, a), (_, b) in zip(pruned.named_parameters(), kept.named_parameters()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("room", [True, False])
def test_staged_outputs_from_kept_down_proj_inputs_are_the_same(model_and_ids, monkeypatch, room):
    """The staged pass's outputs from the down_proj inputs it kept equal those from running the MLP again, and a
    plain forward of the pruned block; weights and statistics are the same either way."""
    from wandapp import staged
    from wandapp.adapter import DecoderAdapter
    from wandapp.masks import apply_mask
    from wandapp.methods.stats import ColumnNorm
    from wandapp.methods.wanda import wanda_score
    from wandapp.walker import BlockContext, capture_block_inputs

    model, ids = model_and_ids
    adapter = DecoderAdapter.from_model(model)
    hidden, kwargs = capture_block_inputs(model, adapter, ids, CPU, CPU)
    runs = []
    for keep in (True, False):
        monkeypatch.setattr(staged, "_room_for", lambda *a, keep=keep: keep and room)
        block = copy.deepcopy(adapter.blocks[1])
        ctx = BlockContext(1, block, adapter.linears(block), hidden, kwargs, CPU, micro_batch=4)
        norms = {}

        def prune_group(names, stats, ctx=ctx, norms=norms):
            for name in names:
                norms[name] = stats[name].norm().clone()
                w = ctx.linears[name].weight
                apply_mask(w.data, SparsityPattern.parse("2:4").mask(wanda_score(w, norms[name])))

        outputs = ctx.prune_in_order(ColumnNorm, prune_group, outputs=True)
        assert ctx.log["staged_statistics"] and ctx.log["kept_mlp_inputs"] == (keep and room)
        runs.append((ctx, norms, outputs))
    (kept, norms, out), (again, ref_norms, ref_out) = runs
    assert torch.equal(out, ref_out) and out.shape == hidden.shape and out.dtype == hidden.dtype
    torch.testing.assert_close(out, kept.outputs(), rtol=1e-5, atol=1e-5)
    for name in ref_norms:
        assert torch.equal(norms[name], ref_norms[name]) and torch.equal(kept.linears[name].weight,
                                                                         again.linears[name].weight), name
