"""Where the time goes when one LLaMA-7B-shaped block is pruned (GPU; random weights, timing only).

Times each phase of a method with CUDA synchronisation (capture, statistics passes, regional gradient, RO rounds,
output pass) over a few blocks, then profiles one more block (32 samples) with torch.profiler and prints the top
CUDA kernels.

    python -m benchmarks.pruning.profile_block_7b --methods wanda wanda++ --layers 3 --output $OUT/profile.txt
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import io
import sys
import time

import torch

from benchmarks.pruning.prune_time_7b import SHAPES, random_llama
from benchmarks.pruning.runs import parse_run
from wandapp import walker
from wandapp.masks import SparsityPattern
from wandapp.methods import build_method
from wandapp.methods import sparsegpt as sparsegpt_module
from wandapp.methods.stats import ColumnNorm, Hessian
from wandapp.offload import BlockShuttle
from wandapp.walker import BlockContext, prune_model

try:  # older checkouts have no overlapped copies
    from wandapp.offload import OverlappedShuttle
except ImportError:
    OverlappedShuttle = None

PHASES = [  # (class or module, "method" for the method instance, None for one this code lacks; attribute; label)
    (BlockShuttle, "to_device", "block to the GPU"),
    (BlockShuttle, "home", "block back to CPU memory"),
    (OverlappedShuttle, "to_device", "block to the GPU (wait for its prefetch)"),
    (OverlappedShuttle, "home", "block home (queued)"),
    (OverlappedShuttle, "flush", "wait for the last copies home"),
    (BlockContext, "collect", "statistics pass (per group)"),
    (walker, "prune_in_stages", "statistics pass (staged)"),
    (BlockContext, "outputs", "output pass"),
    ("method", "regional_gradient", "regional gradient (+ dense targets)"),
    ("method", "_rmsprop_round", "RO steps"),
    ("method", "rgs_prune", "RGS prune (statistics + masks)"),
    (Hessian, "add", "Hessian accumulation (x^T x)"),
    (ColumnNorm, "add", "input-norm accumulation"),
    (sparsegpt_module, "sparsegpt_prune", "SparseGPT prune (all of it)"),
    (sparsegpt_module, "_inverse_hessian_factor", "SparseGPT: damped inverse + Cholesky"),
    (getattr(sparsegpt_module, "_ColumnLoop", None), "__call__", "SparseGPT: 128-column loops"),
]


def _sync():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed(fn, label, totals):
    @functools.wraps(fn)
    def wrapper(*a, **k):
        _sync()
        start = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            _sync()
            totals[label] += time.perf_counter() - start
    return wrapper


@contextlib.contextmanager
def phase_timers(method, totals):
    undo = []
    for owner, attr, label in PHASES:
        target = method if owner == "method" else owner
        if target is None:
            continue
        if not hasattr(target, attr):
            continue
        original = getattr(target, attr)
        setattr(target, attr, timed(original, label, totals))
        undo.append((target, attr, original))
    try:
        yield
    finally:
        for target, attr, original in undo:
            setattr(target, attr, original)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=["wanda", "wanda++"],
                    help="METHOD[@SPARSITY[@key=value,...]] as in quality.py")
    ap.add_argument("--sparsity", default="2:4")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--no-profiler", action="store_true")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--shape", default="7b", choices=list(SHAPES), help="7b, or smaller shapes for a CPU look")
    ap.add_argument("--output", default=None)
    args = ap.parse_args()

    out = io.StringIO()

    def say(*parts):
        print(*parts, flush=True)
        print(*parts, file=out)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = torch.float16 if cuda else torch.float32
    model = random_llama(device, args.layers, dtype, args.shape).to("cpu")
    say(f"attn_implementation={model.config._attn_implementation} torch={torch.__version__} "
        f"device={torch.cuda.get_device_name() if cuda else 'cpu'} shape={args.shape} "
        f"{args.nsamples}x{args.seqlen} micro-batch {args.micro_batch}")
    ids = torch.randint(0, 32000, (args.nsamples, args.seqlen), generator=torch.Generator().manual_seed(0))
    for run in args.methods:
        name, sparsity, hyper, preset = parse_run(run)
        method = build_method(name, SparsityPattern.parse(sparsity or args.sparsity), preset, **hyper)
        totals: dict[str, float] = collections.defaultdict(float)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        _sync()
        start = time.perf_counter()
        with phase_timers(method, totals):
            prune_model(model, ids, method, device, micro_batch=args.micro_batch)
        _sync()
        wall = time.perf_counter() - start
        peak = f", peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB" if cuda else ""
        say(f"\n== {run}: {args.layers} blocks in {wall:.2f} s ({wall / args.layers:.2f} s/block incl. capture){peak}")
        for label, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
            say(f"  {label:32s} {seconds / args.layers:8.3f} s/block")
        if args.no_profiler or not cuda:
            continue
        one = random_llama(device, 1, dtype, args.shape).to("cpu")
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            prune_model(one, ids[:32], method, device, micro_batch=args.micro_batch)  # 32 samples: fewer events
            torch.cuda.synchronize()
        say(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=60))
        del one
    if args.output:
        with open(args.output, "w") as f:
            f.write(out.getvalue())


if __name__ == "__main__":
    sys.exit(main())
