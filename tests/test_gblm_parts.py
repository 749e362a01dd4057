"""GBLM's parts on tiny Llamas fed random tokens (no tokenizer, no data mirror: a second or two each): the gradient
pass's defaults and options against whole-model autograd, frozen parameters, the block moves, prepare's
arguments, each block scored with its own G, the score formula, the refusals; CUDA-only checks at the end."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import wandapp.methods.gblm as gblm
from conftest import build_tiny_llama
from wandapp.adapter import DecoderAdapter
from wandapp.masks import SparsityPattern
from wandapp.methods import build_method
from wandapp.methods.gblm import Gblm, gblm_score, lm_gradients
from wandapp.walker import module_device, prune_model

CPU = torch.device("cpu")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
LINEARS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
           "mlp.up_proj", "mlp.down_proj"]


def tiny(**overrides):
    return build_tiny_llama(vocab_size=128, **overrides)


def token_ids(n=5, t=12, seed=0):
    return torch.randint(0, 128, (n, t), generator=torch.Generator().manual_seed(seed))


def direct_gradients(model, ids, scale, norm):
    """Per block, per linear: sqrt(sum_n (scale g_n)^2) or sum_n |scale g_n|, g_n from one whole-model backward of
    sample n's own LM loss (float64 sums)."""
    model = copy.deepcopy(model).requires_grad_(True)
    adapter = DecoderAdapter.from_model(model)
    lins = [adapter.linears(b) for b in adapter.blocks]
    acc = [{k: torch.zeros(v.weight.shape, dtype=torch.float64) for k, v in block.items()} for block in lins]
    for n in range(ids.shape[0]):
        model.zero_grad()
        model(ids[n : n + 1], labels=ids[n : n + 1], use_cache=False).loss.backward()
        for block, sums in zip(lins, acc):
            for k, lin in block.items():
                g = scale * lin.weight.grad.double()
                sums[k] += g.square() if norm == "l2" else g.abs()
    return [{k: (v.sqrt() if norm == "l2" else v) for k, v in sums.items()} for sums in acc]


def assert_gradients_close(got, expected):
    assert len(got) == len(expected)
    for block, ref in zip(got, expected):
        assert list(block) == LINEARS
        for k, G in block.items():
            assert G.dtype == torch.float32 and G.shape == ref[k].shape
            torch.testing.assert_close(G.double(), ref[k], rtol=1e-4, atol=1e-5 * float(ref[k].abs().max()))


def test_gradient_pass_defaults_are_scale_100_l2_in_one_chunk_with_offload(monkeypatch):
    model, ids = tiny(), token_ids()
    sweeps, real = [], gblm._moved
    monkeypatch.setattr(gblm, "_moved", lambda blocks, device, offload: sweeps.append(offload) or real(
        blocks, device, offload))
    assert_gradients_close(lm_gradients(model, ids, CPU), direct_gradients(model, ids, 100.0, "l2"))
    assert sweeps == [True, True]  # one chunk of 5 (a forward and a backward sweep), blocks sent home by default
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_gradient_pass_options_scale_l1_and_uneven_chunks():
    model, ids = tiny(), token_ids()
    got = lm_gradients(model, ids, CPU, scale=3.0, norm="l1", chunk=2, offload=False, store="cpu")
    assert_gradients_close(got, direct_gradients(model, ids, 3.0, "l1"))


def test_frozen_parameters_get_gradients_and_stay_frozen():
    """A frozen linear (and frozen norms) still get G; every requires_grad flag is as it was afterwards."""
    model, ids = tiny(), token_ids(4)
    for name, p in model.named_parameters():
        if "layernorm" in name or "layers.1.self_attn.q_proj" in name:
            p.requires_grad_(False)
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    assert not all(flags.values()) and any(flags.values())
    got = lm_gradients(model, ids, CPU, chunk=3)
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert_gradients_close(got, direct_gradients(model, ids, 100.0, "l2"))


def test_an_unknown_gradient_norm_is_refused_before_any_work():
    with pytest.raises(ValueError) as e:
        lm_gradients(None, None, CPU, norm="l3")
    assert str(e.value) == "gradient_norm must be one of l2, l1; got 'l3'"


class Recorded(nn.Linear):
    """A block whose moves are logged, not made (so a CPU test can use a 'meta' compute device)."""

    def __init__(self, log):
        super().__init__(2, 2)
        self.log = log

    def to(self, *args, **kwargs):
        self.log.append((self, *args))
        return self


@pytest.mark.parametrize("offload", [True, False])
def test_each_block_is_moved_to_the_device_for_its_turn_and_home_after_with_offload(offload):
    log = []
    blocks = [Recorded(log), Recorded(log)]
    meta = torch.device("meta")
    seen = []
    for block in gblm._moved(blocks, meta, offload):
        seen.append((block, len(log)))
    assert seen == [(blocks[0], 1), (blocks[1], 3 if offload else 2)]  # on the device while it is yielded
    if offload:
        assert log == [(blocks[0], meta), (blocks[0], CPU), (blocks[1], meta), (blocks[1], CPU)]
    else:
        assert log == [(blocks[0], meta), (blocks[1], meta)]  # no offload: they stay on the device


def test_prepare_passes_the_hyperparameters_and_the_walkers_placement(monkeypatch):
    calls = []
    monkeypatch.setattr(gblm, "lm_gradients", lambda *args: calls.append(args) or ["G"])
    method = Gblm(SparsityPattern.parse("0.5"), gradient_norm="l1", gradient_scale=3.0, gradient_chunk=2)
    model, ids, store = object(), object(), torch.device("meta")
    method.prepare(model, ids, CPU, offload=False, store=store)
    method.prepare(model, ids, CPU)
    assert calls == [(model, ids, CPU, 3.0, "l1", 2, False, store), (model, ids, CPU, 3.0, "l1", 2, True, None)]
    assert method.gradients == ["G"]


def test_prepare_computes_the_methods_gradients():
    model, ids = tiny(num_hidden_layers=1), token_ids(3)
    method = build_method("gblm", SparsityPattern.parse("0.5"), gradient_norm="l1", gradient_scale=0.5,
                          gradient_chunk=2)
    assert method.gradients is None
    method.prepare(model, ids, CPU)
    assert_gradients_close(method.gradients, direct_gradients(model, ids, 0.5, "l1"))


def test_the_walk_needs_prepare():
    with pytest.raises(RuntimeError) as e:
        Gblm(SparsityPattern.parse("0.5")).prune_block(None)
    assert str(e.value) == "gblm: prepare() must compute the gradients before the walk"


@pytest.mark.parametrize("sparsity", ["0.5", "2:4"])
def test_each_block_is_scored_with_its_own_gradients(monkeypatch, sparsity):
    """Two blocks, G of 1e30 scale and different per block: |W| G dominates |W| ||X|| below a float32 ulp, so
    the pruned set of every linear is the mask of |W| * G of its own block."""
    model, ids = tiny(), token_ids(3)
    dense = copy.deepcopy(model)
    shapes = [{k: v.weight.shape for k, v in DecoderAdapter.from_model(model).linears(b).items()}
              for b in DecoderAdapter.from_model(model).blocks]
    gen = torch.Generator().manual_seed(5)
    G = [{k: 1e30 * torch.rand(s, generator=gen) for k, s in block.items()} for block in shapes]
    monkeypatch.setattr(gblm, "lm_gradients", lambda *args: G)
    pattern = SparsityPattern.parse(sparsity)
    prune_model(model, ids, build_method("gblm", pattern), CPU)
    adapter, ref = DecoderAdapter.from_model(model), DecoderAdapter.from_model(dense)
    for i, (block, dense_block) in enumerate(zip(adapter.blocks, ref.blocks)):
        for k, lin in adapter.linears(block).items():
            w = ref.linears(dense_block)[k].weight.detach()
            expected = pattern.mask(w.abs() * G[i][k])
            assert torch.equal(lin.weight == 0, expected), (i, k)
            assert torch.equal(lin.weight[~expected], w[~expected])


def test_score_formula():
    weight = nn.Parameter(torch.tensor([[1.0, -2.0, 0.5], [-0.25, 3.0, -1.0]], dtype=torch.bfloat16))
    column_norm = torch.tensor([2.0, 0.5, 4.0])
    G = torch.tensor([[1.0, 10.0, 0.0], [2.0, 0.0, 3.0]])
    score = gblm_score(weight, column_norm, G)
    assert score.dtype == torch.float32 and not score.requires_grad
    expected = torch.tensor([[1 * 2 + 1 * 1, 2 * 0.5 + 2 * 10, 0.5 * 4 + 0],
                             [0.25 * 2 + 0.25 * 2, 3 * 0.5 + 0, 1 * 4 + 1 * 3]])
    assert torch.equal(score, expected)


# ---- CUDA only ----


@cuda
@pytest.mark.parametrize("store", [None, "cpu"])
def test_cuda_gradient_pass_of_a_cpu_model_matches_the_cpu_pass(store, monkeypatch):
    """Blocks shuttled to the GPU one at a time (through the pinned staging buffer) and home again into their own
    CPU storage; the chunk's hidden states and G where `store` says (default: the GPU)."""
    model, ids = tiny(), token_ids()
    ref = lm_gradients(model, ids, CPU)
    blocks = DecoderAdapter.from_model(model).blocks
    storage = [p.data_ptr() for b in blocks for p in b.parameters()]
    hidden_on, real = [], gblm._forward_sweep
    monkeypatch.setattr(gblm, "_forward_sweep", lambda blocks, hidden, *rest: hidden_on.append(hidden.device.type)
                        or real(blocks, hidden, *rest))
    got = lm_gradients(model, ids, torch.device("cuda"), store=store)
    want = "cpu" if store == "cpu" else "cuda"
    assert hidden_on == [want]
    assert all(G.device.type == want for block in got for G in block.values())
    assert [p.data_ptr() for b in blocks for p in b.parameters()] == storage  # the shuttle, not module.to
    assert all(p.device.type == "cpu" and p.grad is None and p.requires_grad for p in model.parameters())
    for block, ref_block in zip(got, ref):
        for k, G in block.items():
            torch.testing.assert_close(G.cpu(), ref_block[k], rtol=1e-3, atol=1e-4 * float(ref_block[k].abs().max()))


@cuda
def test_cuda_gradient_pass_without_offload_leaves_the_blocks_on_the_gpu():
    model, ids = tiny(), token_ids(3)
    ref = lm_gradients(model, ids, CPU)
    got = lm_gradients(model, ids, torch.device("cuda"), offload=False)
    assert all(module_device(b).type == "cuda" for b in DecoderAdapter.from_model(model).blocks)
    for block, ref_block in zip(got, ref):
        for k, G in block.items():
            torch.testing.assert_close(G.cpu(), ref_block[k], rtol=1e-3, atol=1e-4 * float(ref_block[k].abs().max()))


@cuda
def test_cuda_score_of_a_cpu_gradient_is_on_the_weights_device():
    weight = torch.randn(4, 6, device="cuda")
    score = gblm_score(weight, torch.rand(6), torch.rand(4, 6))
    assert score.device.type == "cuda"
