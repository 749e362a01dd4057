"""GPU timing with CUDA events: warm-up, graph replay to remove host overhead, medians."""

from __future__ import annotations

import statistics
from typing import Callable

import torch


def event_ms(fn: Callable[[], object], repeat: int = 1) -> float:
    """Milliseconds of `repeat` back-to-back calls of fn on the current stream, between two CUDA events; waits for
    the second. Every GPU timer here and in benchmarks/kernels/ is built on this one loop."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def median_ms_eager(fn: Callable[[], object], device, warmup: int = 5, iters: int = 20) -> float:
    """Median of per-call times, each call launched from Python (includes host overhead)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize(device)
    return statistics.median(event_ms(fn) for _ in range(iters))


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


def replay_median_ms(graph: torch.cuda.CUDAGraph, device, iters: int, calls: int = 1, warmup: int = 2) -> float:
    """Median ms per call over `iters` timed replays of a captured graph holding `calls` calls."""
    for _ in range(warmup):
        graph.replay()
    torch.cuda.synchronize(device)
    return statistics.median(event_ms(graph.replay) / calls for _ in range(iters))


def median_ms_graph(fn: Callable[[], object], device, calls: int = 10, iters: int = 15) -> float:
    """Median per-call time of fn replayed inside a CUDA graph: the device time without Python or plan set-up."""
    graph = capture_graph(fn, device, calls)
    ms = replay_median_ms(graph, device, iters, calls)
    del graph
    return ms


def interleaved_medians(fns: dict[str, Callable[[], object]], device, rounds: int = 3, calls: int = 10,
                        iters: int = 15) -> dict[str, float]:
    """median_ms_graph of each fn, each captured once and then timed in `rounds` alternating passes."""
    graphs = {name: capture_graph(fn, device, calls) for name, fn in fns.items()}
    return alternating_medians(graphs, device, rounds, iters, calls)


def alternating_medians(graphs: dict, device, rounds: int = 3, iters: int = 15, calls: int = 1) -> dict:
    """{key: median ms per call} of captured graphs replayed in `rounds` passes over all of them, in the dict's
    order, then the median of the passes.

    Back-to-back products run the H100 into its power limit, and its clock drifts with what ran before (measured
    1.2-1.4 GHz of 1.98 under sustained load), so timing one graph fully before the other biases their ratio;
    alternating them spreads the drift over both.
    """
    times: dict = {key: [] for key in graphs}
    for _ in range(rounds):
        for key, graph in graphs.items():
            times[key].append(replay_median_ms(graph, device, iters, calls))
    return {key: statistics.median(values) for key, values in times.items()}
