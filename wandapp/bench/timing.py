"""GPU timing with CUDA events: warm-up, graph replay to remove host overhead, medians."""

from __future__ import annotations

import statistics
from typing import Callable

import torch


def median_ms_eager(fn: Callable[[], object], device, warmup: int = 5, iters: int = 20) -> float:
    """Median of per-call times, each call launched from Python (includes host overhead)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize(device)
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def capture_graph(fn: Callable[[], object], device, calls: int = 1) -> torch.cuda.CUDAGraph:
    """Capture `calls` back-to-back calls of fn into one CUDA graph (after warm-up on a side stream)."""
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm-up: handles, workspaces and allocator pools exist before capture
            fn()
    torch.cuda.current_stream(device).wait_stream(stream)
    torch.cuda.synchronize(device)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    torch.cuda.synchronize(device)
    return graph


def median_ms_graph(fn: Callable[[], object], device, calls: int = 10, iters: int = 15) -> float:
    """Median per-call time of fn replayed inside a CUDA graph: the device time without Python or plan set-up."""
    graph = capture_graph(fn, device, calls)
    for _ in range(2):
        graph.replay()
    torch.cuda.synchronize(device)
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    del graph
    return statistics.median(times)
