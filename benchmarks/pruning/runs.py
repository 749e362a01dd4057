"""Run specs shared by the pruning benchmarks: METHOD[@SPARSITY[@key=value,...]] (key 'preset' picks a preset).

Imports nothing from wandapp, so a benchmark can drive an older wandapp checkout with it."""

from __future__ import annotations


def add_run_args(ap) -> None:
    """The options of a benchmark that loads one model, calibrates on C4 and scores WikiText-2 perplexity."""
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-windows", type=int, default=None, help="perplexity windows (default: the whole split)")
    ap.add_argument("--micro-batch", type=int, default=16)


def parse_run(text: str) -> tuple[str, str | None, dict, str]:
    parts = text.split("@")
    method, sparsity = parts[0], (parts[1] if len(parts) > 1 else None)
    hyper, preset = {}, "paper"
    for kv in (parts[2].split(",") if len(parts) > 2 and parts[2] else []):
        key, value = kv.split("=")
        if key == "preset":
            preset = value
            continue
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                pass
        hyper[key] = value
    return method, sparsity, hyper, preset
