"""Wanda++'s RO sample draws come from the run's seed alone (reproducible runs, per-seed variation)."""

import copy

import torch

from conftest import build_tiny_llama
from wandapp.adapter import DecoderAdapter
from wandapp.data import calibration_windows
from wandapp.masks import SparsityPattern
from wandapp.methods import build_method
from wandapp.walker import BlockContext, capture_block_inputs

CPU = torch.device("cpu")


def test_ro_draws_follow_the_seed_not_the_global_rng(data_dir, tokenizer):
    model = build_tiny_llama()
    ids = calibration_windows("c4", tokenizer, 16, 64, 0, data_dir)
    adapter = DecoderAdapter.from_model(model)
    hidden, kwargs = capture_block_inputs(model, adapter, ids, CPU, CPU)

    def prune(seed, global_seed):
        torch.manual_seed(global_seed)  # anything drawn from the global generator would differ between calls
        block = copy.deepcopy(adapter.blocks[0])
        ctx = BlockContext(0, block, adapter.linears(block), hidden, kwargs, CPU)
        method = build_method("wanda++", SparsityPattern.parse("2:4"), ro_lr=1e-3, ro_samples=4, ro_rounds=2,
                              seed=seed)
        method.prune_block(ctx)
        return [lin.weight.detach().clone() for lin in ctx.linears.values()]

    first, same_seed, other_seed = prune(0, 1), prune(0, 2), prune(1, 1)
    assert all(torch.equal(a, b) for a, b in zip(first, same_seed))
    assert not all(torch.equal(a, c) for a, c in zip(first, other_seed))  # 4 of 16 samples: other draws
