"""Shared pieces of the one-block GPU benchmarks (stats_pass_7b, compiled_block_7b): block 0 of a random
LLaMA-shaped model with its captured calibration inputs, and best-of-N timing with CUDA events."""

from __future__ import annotations

import time

import torch

from benchmarks.pruning.prune_time_7b import random_llama
from wandapp.adapter import DecoderAdapter
from wandapp.walker import capture_block_inputs


def block_zero(device: torch.device, shape: str, nsamples: int, seqlen: int):
    """(model, adapter, block 0, its inputs (nsamples, seqlen, hidden), its keyword arguments); fp16 on CUDA."""
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    model = random_llama(device, 1, dtype, shape)
    adapter = DecoderAdapter.from_model(model)
    ids = torch.randint(0, 32000, (nsamples, seqlen), generator=torch.Generator().manual_seed(0))
    hidden, kwargs = capture_block_inputs(model, adapter, ids, device, device)
    return model, adapter, adapter.blocks[0], hidden, kwargs


def timed(fn, repeat: int, cuda: bool) -> float:
    """Best of `repeat` calls, in seconds: CUDA events on CUDA (no sync inside fn), wall time on the CPU."""
    best = float("inf")
    for _ in range(repeat):
        if not cuda:  # a CPU run checks the script, its seconds mean little
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1000)
    return best
