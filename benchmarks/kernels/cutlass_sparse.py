"""CUTLASS sm90 2:4 GEMMs against cuBLAS on LLaMA-7B shapes: every kernel choice, then the MLP's products.

    python -m benchmarks.kernels.cutlass_sparse --out DIR [--tokens 512,2048,8192]

Random 2:4 fp16 weights; CUDA-graph replay medians (wandapp.sparse24.timing), the MLP's dense and sparse timings
alternated (mlp_sweep.MlpCase, as `wandapp bench` times them). Writes DIR/cutlass_sparse.json and
prints the tables last. Set WANDAPP_CUTLASS_SPARSE to a prebuilt library, or let it build (nvcc + CUTLASS).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from wandapp.sparse24.cutlass_sparse import Choice, CutlassSparse
from wandapp.sparse24.linear_sweep import make_operands, tune_algorithms
from wandapp.sparse24.mlp_sweep import MlpCase, random_gated_mlp
from wandapp.sparse24.timing import median_ms_graph

SHAPES = {"gate+up fused": (22016, 4096), "gate/up": (11008, 4096), "down": (4096, 11008),
          "qkv fused": (12288, 4096), "q/k/v/o": (4096, 4096)}


def tune_shape(lib, name, shape, tokens, device):
    """Every kernel choice for one shape and token count (linear_sweep.tune_algorithms with CUTLASS alone and no
    swizzle pruning); the dense time and the records, fastest first."""
    weight, x = make_operands(shape, tokens, torch.float16, device, torch.Generator(device).manual_seed(1))
    dense_ms = median_ms_graph(lambda: F.linear(x, weight), device)
    records = []
    for rec in tune_algorithms(None, name, shape, tokens, torch.float16, device, layouts=(), cutlass=lib,
                               cutlass_top=None, operands=(weight, x)):
        if "sparse_ms" not in rec:
            records.append(dict(choice=rec["layout"], error=rec["error"]))
            continue
        choice = Choice.parse(rec["layout"])
        records.append(dict(choice=rec["layout"], config=choice.config, swizzle=choice.swizzle, raster=choice.raster,
                            ms=rec["sparse_ms"], speedup=dense_ms / rec["sparse_ms"], rel_err=rec["rel_err"]))
    return dict(name=name, out_features=shape[0], in_features=shape[1], tokens=tokens, dense_ms=dense_ms,
                dense_tflops=2 * shape[0] * shape[1] * tokens / dense_ms / 1e9, records=records)


def mlp_products(tokens, best, device, hidden=4096, inter=11008, sustain_s: float = 0.0, duty: float = 0.0):
    """The MLP's products and module, dense against the fused sparse gate+up and down with each one's fastest
    choice, timed alternately (mlp_sweep.MlpCase); then, with sustain_s, each side's products replayed alone, and
    with duty, both in short alternating bursts at that duty cycle."""
    choices = [(0, 1, best[(name, tokens)]["choice"]) for name in ("gate+up fused", "down")]
    gen = torch.Generator(device).manual_seed(2)
    case = MlpCase(random_gated_mlp(hidden, inter, torch.float16, device, gen), tokens, *choices, generator=gen)
    rec = case.record()
    if sustain_s:
        rec["sustained"] = {kind: sustained(fn, device, sustain_s) for kind, fn in
                            (("dense_products", case.dense_products), ("sparse_products", case.sparse_products))}
    if duty:
        rec["bursts"] = bursts({"dense_products": case.dense_products, "sparse_products": case.sparse_products},
                               device, duty)
    return rec


def nvml_handle(device):
    """(pynvml, the device's NVML handle), NVML initialised; one visible GPU on the benchmark machine."""
    import pynvml

    pynvml.nvmlInit()
    return pynvml, pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)


def bursts(fns: dict, device, duty: float, burst_ms: float = 20.0, seconds: float = 4.0) -> dict:
    """Each fn replayed in bursts of about `burst_ms`, the fns alternating, with idle gaps that keep the GPU busy
    `duty` of the time: the board's power averages out below its limit, so a burst runs at the clock the power
    cap allows for short work. {name: median ms per call over the bursts, and the SM clock read after each}."""
    import statistics

    from wandapp.sparse24.timing import capture_graph, event_ms

    pynvml, handle = nvml_handle(device)
    graphs = {name: capture_graph(fn, device, calls=10) for name, fn in fns.items()}
    # replays per burst, from one timed replay
    per_burst = {name: max(1, round(burst_ms / event_ms(graph.replay))) for name, graph in graphs.items()}
    times, clocks = {name: [] for name in graphs}, {name: [] for name in graphs}
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        for name, graph in graphs.items():
            ms = event_ms(graph.replay, per_burst[name])
            clocks[name].append(pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM))
            times[name].append(ms / (per_burst[name] * 10))
            time.sleep(ms / 1000 * (1 - duty) / duty)
    return {name: dict(ms_per_call=statistics.median(times[name]), bursts=len(times[name]), duty=duty,
                       burst_ms=burst_ms, sm_mhz=statistics.median(clocks[name])) for name in graphs}


def sustained(fn, device, seconds: float) -> dict:
    """Replay fn for `seconds` while sampling the SM clock and board power through NVML: a product that draws
    more power than the board allows runs at a lower clock, which caps any kernel's speed-up."""
    import statistics
    import threading

    from wandapp.sparse24.timing import capture_graph, event_ms

    pynvml, handle = nvml_handle(device)
    graph = capture_graph(fn, device, calls=10)
    samples, done = [], threading.Event()

    reasons = []
    clock_reasons = getattr(pynvml, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
        pynvml.nvmlDeviceGetCurrentClocksThrottleReasons  # older NVML bindings

    def sample():
        while not done.is_set():
            samples.append((pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
                            pynvml.nvmlDeviceGetPowerUsage(handle) / 1000))
            reasons.append(clock_reasons(handle))
            time.sleep(0.02)

    thread = threading.Thread(target=sample)
    replays, t0 = 0, time.perf_counter()

    def replay_for_seconds():
        nonlocal replays
        while time.perf_counter() - t0 < seconds:
            graph.replay()
            replays += 1
            if replays % 20 == 0:  # keep the host within a few replays of the GPU
                torch.cuda.synchronize(device)

    thread.start()
    ms = event_ms(replay_for_seconds)
    done.set()
    thread.join()
    late = samples[len(samples) // 2:] or samples  # the second half: clocks settled
    return dict(ms_per_call=ms / (replays * 10), seconds=seconds,
                sm_mhz=statistics.median(c for c, _ in late), power_w=statistics.median(p for _, p in late),
                power_limit_w=pynvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000,
                max_sm_mhz=pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM),
                app_sm_mhz=pynvml.nvmlDeviceGetApplicationsClock(handle, pynvml.NVML_CLOCK_SM),
                temperature_c=pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU),
                clock_limits=_clock_reasons(reasons[len(reasons) // 2:] or reasons))


def _clock_reasons(masks: list[int]) -> dict[str, float]:
    """Share of the samples in which NVML named each reason for holding the SM clock below its maximum."""
    import pynvml

    names = {n.removeprefix("nvmlClocksEventReason").removeprefix("nvmlClocksThrottleReason"): getattr(pynvml, n)
             for n in dir(pynvml) if n.startswith(("nvmlClocksEventReason", "nvmlClocksThrottleReason"))
             and n not in ("nvmlClocksEventReasonAll", "nvmlClocksThrottleReasonAll", "nvmlClocksEventReasonNone",
                           "nvmlClocksThrottleReasonNone") and isinstance(getattr(pynvml, n), int)}
    return {name: sum(bool(m & bit) for m in masks) / len(masks) for name, bit in sorted(names.items())
            if any(m & bit for m in masks)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokens", default="512,1024,2048,4096,8192")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--duty", type=float, default=0.0, help="also time the MLP products in ~20 ms bursts "
                        "busy this share of the time (0: skip), below the power limit on average")
    parser.add_argument("--sustain", type=float, default=3.0, help="seconds of sustained MLP products per case "
                        "with NVML clock and power samples (0: skip)")
    args = parser.parse_args()
    device = torch.device("cuda", torch.cuda.current_device())
    t0 = time.perf_counter()
    lib = CutlassSparse(device)
    print(f"library ready in {time.perf_counter() - t0:.1f} s: {len(lib.families)} configs", flush=True)
    tokens_list = [int(t) for t in args.tokens.split(",")]
    shapes = [s for s in args.shapes.split(",") if s]
    result = dict(device=torch.cuda.get_device_name(device), torch=torch.__version__, shapes=[], mlp=[])
    best = {}
    for name in shapes:
        for tokens in tokens_list:
            rec = tune_shape(lib, name, SHAPES[name], tokens, device)
            result["shapes"].append(rec)
            top = rec["records"][0]
            best[(name, tokens)] = top
            print(f"{name} {SHAPES[name]} x {tokens}: dense {rec['dense_ms']:.4f} ms, best {top.get('choice')} "
                  f"{top.get('ms', float('nan')):.4f} ms ({top.get('speedup', 0):.2f}x, "
                  f"err {top.get('rel_err', 0):.1e})",
                  flush=True)
    for tokens in tokens_list:
        if ("gate+up fused", tokens) in best and ("down", tokens) in best:
            result["mlp"].append(mlp_products(tokens, best, device, sustain_s=args.sustain, duty=args.duty))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cutlass_sparse.json").write_text(json.dumps(result, indent=1))
    print("\n| shape | tokens | dense ms | CUTLASS 2:4 ms | speed-up | choice |")
    for rec in result["shapes"]:
        top = rec["records"][0]
        print(f"| {rec['name']} {rec['out_features']}x{rec['in_features']} | {rec['tokens']} | {rec['dense_ms']:.4f} "
              f"| {top.get('ms', float('nan')):.4f} | {top.get('speedup', 0):.2f}x | {top.get('choice')} |")
    for r in result["mlp"]:
        print(f"MLP products at {r['tokens']}: {r['dense_products_ms']:.4f} -> {r['sparse_products_ms']:.4f} ms "
              f"({r['products_speedup']:.2f}x); module {r['dense_mlp_ms']:.4f} -> {r['sparse_mlp_ms']:.4f} ms "
              f"({r['mlp_speedup']:.2f}x); err {r['rel_err']:.1e}; gate+up {r['gate_up'][2]}, down {r['down'][2]}")
        for kind, row in r.get("bursts", {}).items():
            print(f"  bursts at duty {row['duty']}: {kind} {row['ms_per_call']:.4f} ms/call "
                  f"over {row['bursts']} bursts, "
                  f"SM {row['sm_mhz']} MHz after a burst")
        if "bursts" in r:
            b = r["bursts"]
            speedup = b["dense_products"]["ms_per_call"] / b["sparse_products"]["ms_per_call"]
            print(f"  bursts: products speed-up {speedup:.2f}x")
        for kind, row in r.get("sustained", {}).items():
            print(f"  sustained {kind}: {row['ms_per_call']:.4f} ms/call, SM {row['sm_mhz']} MHz "
                  f"(max {row['max_sm_mhz']}, application {row['app_sm_mhz']}), {row['power_w']:.0f} W of "
                  f"{row['power_limit_w']:.0f} W, {row['temperature_c']} C, clock held by {row['clock_limits']}")


if __name__ == "__main__":
    main()
