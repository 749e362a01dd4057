"""H100 tables: dense vs 2:4 sparse on LLaMA-7B shapes (random 2:4 weights), per linear and end to end.

    python -m benchmarks.kernels.sparse_speed --out DIR [--layers 32] [--dtype bfloat16] [--quick] [--self-check]

Prints the tables last; writes DIR/sparse_speed.json (same schema as `wandapp bench`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from wandapp.sparse24.cusparselt import DEFAULT_LAYOUTS, parse_layouts


def self_check(device) -> None:
    """Cached-plan cuSPARSELt against cuBLAS on random 2:4 weights; eager cost per call after the plan exists."""
    from wandapp.sparse24.cusparselt import CusparseLt
    from wandapp.sparse24.linear_sweep import make_operands, rel_error
    from wandapp.sparse24.timing import median_ms_eager

    lt = CusparseLt(device)
    for shape, tokens in (((4096, 4096), 16), ((11008, 4096), 2048), ((4096, 11008), 333)):
        w, x = make_operands(shape, tokens, torch.float16, device)
        c = lt.compress(w)
        t0 = time.perf_counter()
        y = lt.linear(c, x, shape[0])
        torch.cuda.synchronize(device)
        first = (time.perf_counter() - t0) * 1000
        err = rel_error(y, F.linear(x, w))
        eager = median_ms_eager(lambda: lt.linear(c, x, shape[0]), device)
        print(f"self-check {shape} x {tokens}: rel_err {err:.2e}, first call (plan) {first:.1f} ms, "
              f"eager {eager:.3f} ms, max alg id {lt.max_alg_id(shape[0], shape[1], tokens, torch.float16)}")
        assert err < 1e-2, err


def print_tables(result) -> None:
    print("\n| shape | tokens | dense ms | sparse ms | speedup | layer ms | layer speedup | alg,splitk | layout "
          "| chosen |")
    for r in result["linear"]:
        print(f"| {r['name']} {r['out_features']}x{r['in_features']} | {r['tokens']} | {r['dense_ms']:.4f} | "
              f"{r['sparse_ms']:.4f} | {r['speedup']:.2f} | {r['sparse_layer_ms']:.4f} | {r['layer_speedup']:.2f} | "
              f"{r['alg_id']},{r['split_k']} | {r['layout']} | {r['chosen']} |")
    print("crossover tokens:", result["crossover_tokens"], "tolerance:", result["tolerance"])
    for r in result.get("mlp", []):
        print(f"MLP {r['hidden']}x{r['inter']} at {r['tokens']} tokens: products {r['dense_products_ms']:.4f} -> "
              f"{r['sparse_products_ms']:.4f} ms ({r['products_speedup']:.2f}x); module {r['dense_mlp_ms']:.4f} -> "
              f"{r['sparse_mlp_ms']:.4f} ms ({r['mlp_speedup']:.2f}x); gate_up {r['gate_up']} down {r['down']}")
    e2e = result.get("end_to_end")
    if e2e:
        for row in e2e["prefill"]:
            mode = "compiled" if row.get("compiled") else "eager"
            print(f"prefill {row['kernel']} {mode} b{row['batch']} x {row['prompt_len']}: {row['ms']:.2f} ms")
        for row in e2e["decode"]:
            print(f"decode {row['kernel']} b{row['batch']} prompt {row['prompt_len']}: {row['tokens_per_s']:.1f} tok/s")
        print("prefill speedup:", e2e["prefill_speedup"])
        print("decode speedup:", e2e["decode_speedup"])


def main() -> int:
    from wandapp.sparse24.linear_sweep import LLAMA7B_SHAPES
    from wandapp.sparse24.runner import run_bench
    from wandapp.sparse24.synthetic import build_random_2of4_llama

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="results")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--self-check", action="store_true")
    ap.add_argument("--no-e2e", action="store_true")
    ap.add_argument("--quick", action="store_true",
                    help="tuning at 2048 tokens only, 3 token counts, prefill 1x2048 only")
    ap.add_argument("--layouts", default=DEFAULT_LAYOUTS,
                    help="cuSPARSELt layouts the tuner tries: torch, natural, all, or names (default: %(default)s)")
    ap.add_argument("--no-fuse-mlp", dest="fuse_mlp", action="store_false", help="MLPs per linear")
    ap.add_argument("--no-compile", dest="compile_blocks", action="store_false", help="eager prefill only")
    ap.add_argument("--tune-budget", type=float, default=180.0, help="seconds of tuning at most")
    ap.add_argument("--cutlass", choices=("auto", "on", "off"), default="auto", help="also tune CUTLASS's sm90 kernels")
    ap.add_argument("--dtype", choices=("float16", "bfloat16"), default="float16",
                    help="weights and activations (the CUTLASS kernels are float16 only)")
    args = ap.parse_args()
    device = torch.device("cuda", torch.cuda.current_device())
    if args.self_check:
        self_check(device)
        return 0
    start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save = lambda r: (out / "sparse_speed.json").write_text(json.dumps(r, indent=1, default=str))  # noqa: E731
    dtype = getattr(torch, args.dtype)
    model = None if args.no_e2e else build_random_2of4_llama(device, dtype, num_layers=args.layers)
    quick = dict(tokens=(512, 2048, 8192), tune_tokens=(2048,), prefill_cases=((1, 2048),),
                 decode_cases=((1, 512),)) if args.quick else {}
    cases = dict(prefill_cases=((1, 512), (1, 2048), (4, 2048)), decode_cases=((1, 512), (16, 512)))
    result = run_bench(model, LLAMA7B_SHAPES, device, dtype, **{**cases, **quick}, on_partial=save,
                       layouts=parse_layouts(args.layouts), tune_budget_s=args.tune_budget,
                       fuse_mlp=args.fuse_mlp, compile_blocks=args.compile_blocks, cutlass=args.cutlass,
                       log=lambda m: print(f"[{time.time() - start:.0f} s] {m}", file=sys.stderr, flush=True))
    result["model"] = f"LLaMA-7B-shaped, {args.layers} layers, random 2:4 weights, {args.dtype}"
    save(result)
    print_tables(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
