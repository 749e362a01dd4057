"""Where the time goes when one LLaMA-7B-shaped block is pruned (GPU; random weights, timing only).

Times each phase of a method with CUDA synchronisation (capture, statistics passes, regional gradient, RO rounds,
output pass) over a few blocks, then profiles one more block (32 samples) with torch.profiler and prints the top CUDA kernels.

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

from benchmarks.pruning.prune_time_7b import random_llama
from benchmarks.pruning.quality import parse_run
from wandapp.masks import SparsityPattern
from wandapp.methods import build_method
from wandapp import walker
from wandapp.offload import BlockShuttle
from wandapp.walker import BlockContext, prune_model

PHASES = [  # (class or module, or None for the method instance; attribute; label)
    (BlockShuttle, "to_device", "block to the GPU"),
    (BlockShuttle, "home", "block back to CPU memory"),
    (BlockContext, "collect", "statistics pass (per group)"),
    (walker, "prune_in_stages", "statistics pass (staged)"),
    (BlockContext, "outputs", "output pass"),
    (None, "regional_gradient", "regional gradient (+ dense targets)"),
    (None, "_rmsprop_round", "RO steps"),
    (None, "rgs_prune", "RGS prune (statistics + masks)"),
]


def timed(fn, label, totals):
    @functools.wraps(fn)
    def wrapper(*a, **k):
        torch.cuda.synchronize()
        start = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            torch.cuda.synchronize()
            totals[label] += time.perf_counter() - start
    return wrapper


@contextlib.contextmanager
def phase_timers(method, totals):
    undo = []
    for owner, attr, label in PHASES:
        target = owner or method
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
    ap.add_argument("--output", default=None)
    args = ap.parse_args()

    out = io.StringIO()

    def say(*parts):
        print(*parts, flush=True)
        print(*parts, file=out)

    device = torch.device("cuda")
    model = random_llama(device, args.layers).to("cpu")
    say(f"attn_implementation={model.config._attn_implementation} torch={torch.__version__} "
        f"gpu={torch.cuda.get_device_name()}")
    ids = torch.randint(0, 32000, (args.nsamples, args.seqlen), generator=torch.Generator().manual_seed(0))
    for run in args.methods:
        name, sparsity, hyper, preset = parse_run(run)
        method = build_method(name, SparsityPattern.parse(sparsity or args.sparsity), preset, **hyper)
        totals: dict[str, float] = collections.defaultdict(float)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        with phase_timers(method, totals):
            prune_model(model, ids, method, device, micro_batch=args.micro_batch)
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
        say(f"\n== {run}: {args.layers} blocks in {wall:.2f} s "
            f"({wall / args.layers:.2f} s/block incl. capture), peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
        for label, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
            say(f"  {label:32s} {seconds / args.layers:8.3f} s/block")
        if args.no_profiler:
            continue
        one = random_llama(device, 1).to("cpu")
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
