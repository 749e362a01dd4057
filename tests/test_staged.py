"""The staged pass (wandapp/staged.py) on a subset of samples and in 16-bit, and its room check for keeping
down_proj's inputs, against the per-group partial forwards and the check's own formula."""

import copy

import pytest
import torch

from conftest import build_tiny_llama
from wandapp import staged
from wandapp.adapter import DecoderAdapter
from wandapp.data import calibration_windows
from wandapp.masks import SparsityPattern, apply_mask
from wandapp.methods.stats import ColumnNorm
from wandapp.methods.wanda import wanda_score
from wandapp.walker import BlockContext, capture_block_inputs

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def setup(data_dir, tokenizer):
    model = build_tiny_llama()
    ids = calibration_windows("c4", tokenizer, 8, 32, 0, data_dir)
    adapter = DecoderAdapter.from_model(model)
    hidden, kwargs = capture_block_inputs(model, adapter, ids, CPU, CPU)
    return adapter, hidden, kwargs


def sequential_wanda(setup, samples=None, fallback=False, dtype=None):
    """2:4 Wanda through prune_in_order on a copy of block 0: the norms each group saw, the weights, outputs."""
    adapter, hidden, kwargs = setup
    block = copy.deepcopy(adapter.blocks[0])
    if dtype is not None:
        block.to(dtype)
        hidden = hidden.to(dtype)
    ctx = BlockContext(0, block, adapter.linears(block), hidden, kwargs, CPU, micro_batch=3)
    if fallback:
        ctx._stages_ok = False
    norms = {}

    def prune_group(names, stats):
        for name in names:
            norms[name] = stats[name].norm().clone()
            w = ctx.linears[name].weight
            apply_mask(w.data, SparsityPattern.parse("2:4").mask(wanda_score(w, norms[name])))

    outputs = ctx.prune_in_order(ColumnNorm, prune_group, outputs=True, samples=samples)
    return ctx, norms, outputs


def test_staged_pass_over_a_subset_equals_per_group_passes(setup):
    """With `samples` (Wanda++'s in-loop norms over the round's draw), every stage reads those samples only: the
    same norms, masks and outputs as one partial forward per group over them."""
    samples = [5, 1, 6]
    ctx, norms, outputs = sequential_wanda(setup, samples)
    assert ctx.log["staged_statistics"]
    ref, ref_norms, ref_outputs = sequential_wanda(setup, samples, fallback=True)
    assert not ref.log["staged_statistics"] and outputs.shape[0] == len(samples)
    for name in ref_norms:
        torch.testing.assert_close(norms[name], ref_norms[name], rtol=1e-5, atol=1e-6)
        assert torch.equal(ctx.linears[name].weight, ref.linears[name].weight), name
    torch.testing.assert_close(outputs, ref_outputs, rtol=1e-5, atol=1e-5)
    _, all_norms, _ = sequential_wanda(setup)
    assert not torch.equal(all_norms["self_attn.q_proj"], norms["self_attn.q_proj"])


def test_staged_outputs_are_stored_like_the_inputs(setup):
    """A bfloat16 block with bfloat16 inputs gets bfloat16 outputs, as the next block's inputs."""
    ctx, _, outputs = sequential_wanda(setup, dtype=torch.bfloat16)
    assert ctx.log["staged_statistics"] and outputs.dtype == torch.bfloat16
    assert outputs.shape == ctx.inputs.shape and torch.isfinite(outputs.float()).all()


def fake_sysconf(pages, page_size=2):
    def sysconf(name):
        return {"SC_AVPHYS_PAGES": pages, "SC_PAGE_SIZE": page_size}[name]  # other names: KeyError, not a number
    return sysconf


def test_room_for_keeping_down_proj_inputs_is_half_the_free_memory_over_the_need(monkeypatch):
    """Keep when free / 2 > tokens * width * element size * 1.25 + 1 GiB, tokens summed over the stored
    batches; never when the store is not the compute device; not when free memory cannot be read."""
    normed = [torch.empty(2, 3, 4, dtype=torch.float16), torch.empty(1, 3, 4, dtype=torch.float16)]  # 9 tokens
    need = 9 * 10 * 2 * 1.25 + 2**30
    edge = int(2 * need) // 2  # pages of 2 bytes: free == 2 * need exactly
    monkeypatch.setattr(staged.os, "sysconf", fake_sysconf(edge))
    assert not staged._room_for(CPU, CPU, normed, 10)
    monkeypatch.setattr(staged.os, "sysconf", fake_sysconf(edge + 1))
    assert staged._room_for(CPU, CPU, normed, 10)
    assert not staged._room_for(CPU, torch.device("meta"), normed, 10)

    def unreadable(name):
        raise ValueError(name)

    monkeypatch.setattr(staged.os, "sysconf", unreadable)
    assert not staged._room_for(CPU, CPU, normed, 10)


def test_room_for_on_cuda_counts_free_and_cached_free_device_memory(monkeypatch):
    """On a GPU store: keep when free + (reserved - allocated) on that device > the need (no halving: the
    allocator's cache is the job's own); host memory plays no part. torch.cuda is faked, so this runs anywhere."""
    normed = [torch.empty(2, 3, 4, dtype=torch.float16), torch.empty(1, 3, 4, dtype=torch.float16)]  # 9 tokens
    need = int(9 * 10 * 2 * 1.25 + 2**30)
    gpu = torch.device("cuda", 1)
    asked = []

    def memory(free, reserved, allocated):
        monkeypatch.setattr(staged.torch.cuda, "mem_get_info", lambda d: asked.append(d) or (free, 80 * 2**30))
        monkeypatch.setattr(staged.torch.cuda, "memory_reserved", lambda d: asked.append(d) or reserved)
        monkeypatch.setattr(staged.torch.cuda, "memory_allocated", lambda d: asked.append(d) or allocated)

    monkeypatch.setattr(staged.os, "sysconf", fake_sysconf(2**40))  # plenty of host memory: must not matter
    memory(need - 700, 1000, 300)  # free + cached free == need exactly
    assert not staged._room_for(gpu, gpu, normed, 10)
    assert asked == [gpu, gpu, gpu]
    memory(need - 699, 1000, 300)
    assert staged._room_for(gpu, gpu, normed, 10)
    memory(need - 1, 0, 0)
    assert not staged._room_for(gpu, gpu, normed, 10)
