"""Where does cuSPARSELt time go on this GPU? Layouts, dtypes, algorithm ids, split-k, fused shapes, eager vs graph.

Run on the GPU machine: python -m benchmarks.kernels.cslt_explore --out DIR. Prints short tables; writes explore.json.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

from wandapp.sparse24.linear_sweep import LLAMA7B_SHAPES, make_operands, rel_error, sparse_call, time_shape
from wandapp.sparse24.timing import median_ms_graph


def table(records, keys):
    print(" | ".join(keys))
    for r in records:
        print(" | ".join(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in keys))


def section(name, fn, results):
    t0 = time.time()
    print(f"\n## {name}", flush=True)
    try:
        results[name] = fn()
    except Exception:  # keep the other sections' numbers
        results[name] = {"error": traceback.format_exc()}
        print(results[name]["error"])
    print(f"({time.time() - t0:.1f} s)", flush=True)


def layouts(device):
    recs = []
    for layout in ("out_t", "transpose_result", "x_t_rowmajor"):
        for name, shape in LLAMA7B_SHAPES.items():
            recs += time_shape(name, shape, (16, 512, 2048, 8192), torch.float16, device, layout=layout,
                               eager=(layout == "transpose_result"))
    table(recs, ["layout", "name", "tokens", "alg_id", "dense_ms", "sparse_ms", "speedup", "rel_err"])
    eager = [r for r in recs if "sparse_eager_ms" in r]
    table(eager, ["name", "tokens", "dense_eager_ms", "sparse_eager_ms"])
    return recs


def fused_and_bf16(device):
    recs = []
    for name, shape in {"qkv_fused": (12288, 4096), "gate_up_fused": (22016, 4096)}.items():
        recs += time_shape(name, shape, (2048, 8192), torch.float16, device)
    recs += time_shape("gate/up_proj", (11008, 4096), (2048, 8192), torch.bfloat16, device)
    recs += time_shape("down_proj", (4096, 11008), (2048, 8192), torch.bfloat16, device)
    table(recs, ["name", "dtype", "tokens", "alg_id", "dense_ms", "sparse_ms", "speedup"])
    return recs


def alg_split_sweep(device):
    recs = []
    for name, shape in (("gate/up_proj", (11008, 4096)), ("down_proj", (4096, 11008)), ("q/k/v/o_proj", (4096, 4096))):
        for tokens in (2048, 8192):
            weight, x = make_operands(shape, tokens, torch.float16, device)
            compressed = torch._cslt_compress(weight)
            ref = F.linear(x, weight)
            dense_ms = median_ms_graph(lambda: F.linear(x, weight), device)
            for alg_id in range(0, 12):
                for split_k in (1, 2, 4):
                    try:
                        err = rel_error(sparse_call(compressed, x, "transpose_result", alg_id, split_k), ref)
                        ms = median_ms_graph(lambda: sparse_call(compressed, x, "transpose_result", alg_id, split_k),
                                             device, calls=5, iters=7)
                    except Exception as e:  # alg ids past the last one are refused
                        recs.append(dict(name=name, tokens=tokens, alg_id=alg_id, split_k=split_k, error=str(e)[:80]))
                        break
                    recs.append(dict(name=name, tokens=tokens, alg_id=alg_id, split_k=split_k, dense_ms=dense_ms,
                                     sparse_ms=ms, speedup=dense_ms / ms, rel_err=err))
    ok = [r for r in recs if "error" not in r]
    best = {}
    for r in ok:
        key = (r["name"], r["tokens"])
        if key not in best or r["sparse_ms"] < best[key]["sparse_ms"]:
            best[key] = r
    table(list(best.values()), ["name", "tokens", "alg_id", "split_k", "dense_ms", "sparse_ms", "speedup", "rel_err"])
    print("alg ids accepted:", sorted({r["alg_id"] for r in ok}))
    return recs


def small_e2e(device):
    from wandapp.sparse24.end_to_end import (decode_tokens_per_s, logits_rel_error, prefill_ms, random_ids,
                                          restore_dense_linears, swap_in_sparse_linears)
    from wandapp.sparse24.synthetic import build_random_2of4_llama

    model = build_random_2of4_llama(device, torch.float16, num_layers=4)
    ids = random_ids(model, 1, 1024, device, seed=1)
    with torch.inference_mode():
        ref = model(input_ids=ids, use_cache=False).logits.float()
    out = {"dense_prefill_ms": prefill_ms(model, 1, 2048, device),
           "dense_prefill_eager_ms": prefill_ms(model, 1, 2048, device, graph=False),
           "dense_decode_tok_s": decode_tokens_per_s(model, 1, 128, 32, device)}
    swap_in_sparse_linears(model, lambda o, i: (512, 0, 1, None))
    out["logits_rel_err"] = logits_rel_error(model, ref, ids)
    out["sparse_prefill_ms"] = prefill_ms(model, 1, 2048, device)
    out["sparse_prefill_eager_ms"] = prefill_ms(model, 1, 2048, device, graph=False)
    out["sparse_decode_tok_s"] = decode_tokens_per_s(model, 1, 128, 32, device)
    restore_dense_linears(model)
    print(json.dumps(out, indent=1))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".")
    ap.add_argument("--sections", default="layouts,fused_and_bf16,alg_split_sweep,small_e2e")
    args = ap.parse_args()
    device = torch.device("cuda")
    print(torch.__version__, torch.cuda.get_device_name(device), "cusparselt", torch.backends.cusparselt.version())
    results = {}
    for name in args.sections.split(","):
        section(name, lambda: globals()[name](device), results)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "explore.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
