"""Run specs shared by the pruning benchmarks: METHOD[@SPARSITY[@key=value,...]] (key 'preset' picks a preset).

Imports nothing from wandapp, so a benchmark can drive an older wandapp checkout with it."""

from __future__ import annotations


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
