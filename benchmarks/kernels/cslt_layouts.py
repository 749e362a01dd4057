"""Which way of posing y = x @ W^T to cuSPARSELt is fastest here: operand roles, stored transposes, algorithm ids.

cuSPARSELt picks its kernel from how the product is described: which operand is the 2:4 matrix (A or B),
which tensors lie transposed in memory, row- or column-major descriptions of the same bytes, and an
algorithm id. torch uses one of these (sparse A, output (out, tokens)); this script times all 32 layouts
(`wandapp.sparse24.cusparselt.Layout`), then every algorithm id of the best few; `mlp` times a
whole MLP run per linear (SparseLinear) against one run in the transposed (features, tokens) layout
(SparseGatedMLP).
Every product is checked against F.linear; every time is a CUDA-graph replay median, dense F.linear beside it.

    python -m benchmarks.kernels.cslt_layouts --out DIR [--sections layouts,algs,mlp] [--top 3]

Writes DIR/cslt_layouts.json after each section and prints short tables.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

from wandapp.sparse24.cusparselt import CusparseLt, Layout
from wandapp.sparse24.linear_sweep import LLAMA7B_SHAPES, make_operands, rel_error, tune_algorithms
from wandapp.sparse24.mlp_sweep import GatedMLP
from wandapp.sparse24.sparse_linear import SparseLinear
from wandapp.sparse24.sparse_mlp import SparseGatedMLP
from wandapp.sparse24.timing import median_ms_graph

SHAPES = {**LLAMA7B_SHAPES, "qkv_fused": (12288, 4096), "gate_up_fused": (22016, 4096)}


class Bench:
    """Products timed by the library's tuner (kernel only, operands as each layout stores them, checked against
    F.linear), with dense F.linear on the same shape beside them."""

    def __init__(self, device, dtype=torch.float16):
        self.device, self.dtype, self.lt = device, dtype, CusparseLt(device)
        self._dense = {}

    def dense_ms(self, shape, tokens) -> float:
        if (shape, tokens) not in self._dense:
            w, x = make_operands(shape, tokens, self.dtype, self.device)
            self._dense[(shape, tokens)] = median_ms_graph(lambda: F.linear(x, w), self.device)
        return self._dense[(shape, tokens)]

    def sparse(self, layouts, shape, tokens, max_algs=None, name="") -> list[dict]:
        """Every algorithm id (or the first max_algs) of each layout, fastest first; {'error': ...} records where
        cuSPARSELt refuses a setting or computes a wrong product."""
        recs = tune_algorithms(self.lt, name, shape, tokens, self.dtype, self.device, layouts=layouts,
                               max_algs=max_algs, as_run=False)
        for rec in recs:
            if "sparse_ms" in rec:
                rec["dense_ms"] = self.dense_ms(shape, tokens)
                rec["speedup"] = rec["dense_ms"] / rec["sparse_ms"]
        return recs


def table(records, keys):
    print(" | ".join(keys))
    for r in records:
        print(" | ".join(f"{r[k]:.4g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys), flush=True)


def layouts_section(bench, tokens_list=(2048, 8192)) -> list[dict]:
    shape = SHAPES["gate/up_proj"]
    recs = [r for tokens in tokens_list for r in bench.sparse(Layout.every(), shape, tokens, max_algs=1)]
    ok = sorted((r for r in recs if "error" not in r), key=lambda r: (r["tokens"], r["sparse_ms"]))
    table(ok, ["layout", "tokens", "dense_ms", "sparse_ms", "speedup", "rel_err"])
    refused = sorted({r["layout"] for r in recs if "error" in r})
    print(f"refused ({len(refused)}): {refused}")
    return recs


def best_layouts(recs, top: int) -> list[str]:
    """Layouts ranked by their worst speedup over the token counts timed (all counts must have run)."""
    by_layout: dict[str, list[float]] = {}
    for r in recs:
        by_layout.setdefault(r["layout"], []).append(r.get("speedup", 0.0) if "error" not in r else 0.0)
    ranked = sorted(by_layout, key=lambda k: -min(by_layout[k]))
    return ranked[:top]


def algs_section(bench, layouts, tokens_list=(2048, 8192), budget_s=240.0) -> list[dict]:
    recs, start = [], time.time()
    for name in layouts:
        layout = Layout.parse(name)
        for shape_name, shape in SHAPES.items():
            for tokens in tokens_list:
                if time.time() - start > budget_s:
                    print(f"budget spent: skipping {name} {shape_name} {tokens}")
                    continue
                recs += bench.sparse([layout], shape, tokens, name=shape_name)
    best = {}
    for r in recs:
        key = (r["layout"], r["name"], r["tokens"])
        if "error" not in r and (key not in best or r["sparse_ms"] < best[key]["sparse_ms"]):
            best[key] = r
    default = {(r["layout"], r["name"], r["tokens"]): r.get("sparse_ms") for r in recs if r.get("alg_id") == 0}
    for r in best.values():
        r["default_alg_ms"] = default.get((r["layout"], r["name"], r["tokens"]))
    table(sorted(best.values(), key=lambda r: (r["name"], r["tokens"], r["sparse_ms"])),
          ["name", "tokens", "layout", "alg_id", "dense_ms", "default_alg_ms", "sparse_ms", "speedup"])
    return recs


def fastest_alg(bench, layout, shape, tokens) -> dict:
    """The fastest algorithm id of one product (kernel only)."""
    return next(r for r in bench.sparse([layout], shape, tokens) if "sparse_ms" in r)


def mlp_section(bench, tokens_list=(2048, 8192)) -> list[dict]:
    """A whole LLaMA-7B MLP, dense against two sparse ways of running it.

    per-linear: its three linears as SparseLinear modules (each output copied back to (tokens, out)).
    transposed: SparseGatedMLP: gate and up as one (22016, in) product into (features, tokens), SiLU-mul in that
    layout, down_proj taking the result as stored x^T, one copy back at the end.
    """
    hidden, inter = 4096, 11008
    gen = torch.Generator(bench.device).manual_seed(7)
    dense = GatedMLP(*(make_operands(shape, 1, bench.dtype, bench.device, gen)[0]
                       for shape in ((inter, hidden), (inter, hidden), (hidden, inter))))
    plain, fused, down_t = Layout(), Layout(), Layout(x_t=True)
    recs = []
    for tokens in tokens_list:
        x = torch.randn(tokens, hidden, dtype=bench.dtype, device=bench.device, generator=gen)
        algs = {name: fastest_alg(bench, lay, shape, tokens)["alg_id"] for name, lay, shape in (
            ("gate_up", fused, (2 * inter, hidden)), ("gate", plain, (inter, hidden)),
            ("down_t", down_t, (hidden, inter)), ("down", plain, (hidden, inter)))}
        per_linear = GatedMLP(dense.gate_proj.weight, dense.up_proj.weight, dense.down_proj.weight)
        for name, alg in (("gate_proj", algs["gate"]), ("up_proj", algs["gate"]), ("down_proj", algs["down"])):
            setattr(per_linear, name, SparseLinear(getattr(dense, name), 1, alg, 1, plain.name()))
        transposed = SparseGatedMLP(dense, 1, gate_up=(algs["gate_up"], 1, fused.name()),
                                    down=(algs["down_t"], 1, down_t.name()))
        with torch.inference_mode():
            ref = dense(x)
            rec = dict(tokens=tokens, algs=algs, dense_ms=median_ms_graph(lambda: dense(x), bench.device))
            for name, module in (("per_linear", per_linear), ("transposed", transposed)):
                rec[f"{name}_rel_err"] = rel_error(module(x), ref)
                rec[f"{name}_ms"] = median_ms_graph(lambda: module(x), bench.device)
                rec[f"{name}_speedup"] = rec["dense_ms"] / rec[f"{name}_ms"]
        recs.append(rec)
        print(json.dumps(rec), flush=True)
    return recs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=".")
    ap.add_argument("--sections", default="layouts,algs")
    ap.add_argument("--top", type=int, default=3, help="layouts carried from the layout table into the later sections")
    ap.add_argument("--layouts", default=None, help="comma-separated layout names for the later sections instead")
    args = ap.parse_args()
    device = torch.device("cuda")
    bench = Bench(device)
    results = {"environment": dict(torch=torch.__version__, gpu=torch.cuda.get_device_name(device),
                                   cusparselt=torch.backends.cusparselt.version())}
    print(results["environment"], flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = args.layouts.split(",") if args.layouts else None
    for section in args.sections.split(","):
        t0 = time.time()
        print(f"\n## {section}", flush=True)
        try:
            if section == "layouts":
                results[section] = layouts_section(bench)
                chosen = chosen or best_layouts(results[section], args.top)
                print("carried on:", chosen)
            elif section == "mlp":
                results[section] = mlp_section(bench)
            elif section == "algs":
                results[section] = algs_section(bench, chosen or [Layout().name()])
            else:
                raise ValueError(section)
        except Exception:  # keep the other sections' numbers
            results[section] = {"error": traceback.format_exc()}
            print(results[section]["error"])
        print(f"({time.time() - t0:.1f} s)", flush=True)
        (out / "cslt_layouts.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
