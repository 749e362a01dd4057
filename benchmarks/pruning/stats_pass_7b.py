"""Why Wanda's statistics pass (0.79 of a forward's FLOPs) takes longer than its output pass (a whole forward).

One LLaMA-7B-shaped block on the GPU, random fp16 weights, its captured calibration inputs (128 x 2048 by default).
Each variant runs over all samples in micro-batches and is timed with CUDA events (no synchronisation inside), best
of --repeat:

- outputs: `BlockContext.outputs` (the propagation pass)
- collect: `BlockContext.collect(ColumnNorm, all linears)` (Wanda's statistics pass)
- collect-nostat: the same hooks and stop, statistics that do nothing (the cost of the norms)
- stopped-forward: a plain forward stopped by one pre-hook on down_proj (no statistics objects at all)

then prints a torch.profiler table of one `collect` over 32 samples.

    python -m benchmarks.pruning.stats_pass_7b --output $OUT/stats_pass.txt
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys

import torch

from benchmarks.pruning.one_block import block_zero, timed
from wandapp.methods.stats import ColumnNorm
from wandapp.staged import StopForward
from wandapp.walker import BlockContext


class NoStat:
    def __init__(self, linear):
        pass

    def add(self, x):
        pass


def stopped_forward(ctx: BlockContext, stop_at: str) -> None:
    def hook(module, args):
        raise StopForward

    handle = ctx.block.get_submodule(stop_at).register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            for x in ctx.batches():
                with contextlib.suppress(StopForward):
                    ctx.run(x)
    finally:
        handle.remove()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--micro-batches", type=int, nargs="+", default=[8])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--shape", default="7b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--output", default=None)
    args = ap.parse_args()
    out = io.StringIO()

    def say(*parts):
        print(*parts, flush=True)
        print(*parts, file=out)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    model, adapter, block, hidden, kwargs = block_zero(device, args.shape, args.nsamples, args.seqlen)
    linears = adapter.linears(block)
    names = list(linears)
    shapes = {k: tuple(v.shape) if torch.is_tensor(v) else type(v).__name__ for k, v in kwargs.items()}
    gpu = torch.cuda.get_device_name() if cuda else "cpu"
    say(f"torch={torch.__version__} gpu={gpu} attn={model.config._attn_implementation} "
        f"{args.nsamples}x{args.seqlen} kwargs={shapes}")
    for mb in args.micro_batches:
        ctx = BlockContext(0, block, linears, hidden, kwargs, device, micro_batch=mb)
        rows = {
            "outputs": lambda: ctx.outputs(),
            "collect": lambda: ctx.collect(ColumnNorm, names),
            "collect-nostat": lambda: ctx.collect(NoStat, names),
            "stopped-forward": lambda: stopped_forward(ctx, names[-1]),
        }
        for label, fn in rows.items():
            say(f"micro-batch {mb:3d}  {label:16s} {timed(fn, args.repeat, cuda):.4f} s")
    from torch.profiler import ProfilerActivity, profile

    ctx = BlockContext(0, block, linears, hidden[:32], kwargs, device, micro_batch=args.micro_batches[0])
    ctx.collect(ColumnNorm, names)
    sort = "cuda_time_total" if cuda else "cpu_time_total"
    for label, fn in (("collect", lambda: ctx.collect(ColumnNorm, names)), ("outputs", lambda: ctx.outputs())):
        with profile(activities=[ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * cuda) as prof:
            fn()
            if cuda:
                torch.cuda.synchronize()
        say(f"\n== profile: {label}, 32 samples")
        say(prof.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=70))
    if args.output:
        with open(args.output, "w") as f:
            f.write(out.getvalue())


if __name__ == "__main__":
    sys.exit(main())
