"""Which way of posing y = x @ W^T to cuSPARSELt is fastest here: operand roles, stored transposes, algorithm ids.

cuSPARSELt picks its kernel from how the product is described: which operand is the 2:4 matrix (A or B),
which tensors lie transposed in memory, row- or column-major descriptions of the same bytes, and an
algorithm id. torch uses one of these (sparse A, output (out, tokens)); this script times all 32 layouts
(`wandapp.bench.cusparselt.Layout`), then every algorithm id of the best few; `mlp` times a
whole MLP run per linear against one run in the transposed (features, tokens) layout.
Every product is checked against F.linear; every time is a CUDA-graph replay median, dense F.linear beside it.

    PYTHONPATH=. python benchmarks/cslt_layouts.py --out DIR [--sections layouts,algs,mlp] [--top 3]

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

from wandapp.bench.cusparselt import CusparseLt, Layout
from wandapp.bench.linear_sweep import LLAMA7B_SHAPES, make_operands, rel_error
from wandapp.bench.timing import median_ms_graph
from wandapp.bench.transpose import contiguous

SHAPES = {**LLAMA7B_SHAPES, "qkv_fused": (12288, 4096), "gate_up_fused": (22016, 4096)}


class Bench:
    def __init__(self, device, dtype=torch.float16):
        self.device, self.dtype, self.lt = device, dtype, CusparseLt(device)
        self._operands, self._dense, self._compressed = {}, {}, {}

    def operands(self, shape, tokens):
        if (shape, tokens) not in self._operands:
            gen = torch.Generator(self.device).manual_seed(tokens)
            self._operands[(shape, tokens)] = make_operands(shape, tokens, self.dtype, self.device, gen)
        return self._operands[(shape, tokens)]

    def dense_ms(self, shape, tokens) -> float:
        if (shape, tokens) not in self._dense:
            w, x = self.operands(shape, tokens)
            self._dense[(shape, tokens)] = median_ms_graph(lambda: F.linear(x, w), self.device)
        return self._dense[(shape, tokens)]

    def sparse(self, layout: Layout, shape, tokens, alg_id=0, split_k=1) -> dict:
        """One timed, checked product; {'error': ...} where cuSPARSELt refuses the setting."""
        w, x = self.operands(shape, tokens)
        rec = dict(layout=layout.name(), out_features=shape[0], in_features=shape[1], tokens=tokens, alg_id=alg_id,
                   split_k=split_k)
        try:
            key = (shape, tokens, layout.sparse, layout.weight_t, layout.col)
            if key not in self._compressed:
                self._compressed.clear()  # one compressed weight alive at a time
                self._compressed[key] = self.lt.compress(w, layout)
            compressed = self._compressed[key]
            x_stored = x.t().contiguous() if layout.x_t else x
            plan = self.lt.plan(shape[0], shape[1], tokens, self.dtype, alg_id, split_k, layout)
            y = plan.run(compressed, x_stored)
            rec["rel_err"] = rel_error(y.t() if layout.y_t else y, F.linear(x, w))
            rec["sparse_ms"] = median_ms_graph(lambda: plan.run(compressed, x_stored), self.device, calls=5, iters=9)
        except (RuntimeError, ValueError) as e:
            rec["error"] = str(e)[:100]
            return rec
        rec["dense_ms"] = self.dense_ms(shape, tokens)
        rec["speedup"] = rec["dense_ms"] / rec["sparse_ms"]
        if rec["rel_err"] > 1e-2:  # a wrong product must not win on speed
            rec["error"] = f"wrong result: rel_err {rec['rel_err']:.3g}"
        return rec


def table(records, keys):
    print(" | ".join(keys))
    for r in records:
        print(" | ".join(f"{r[k]:.4g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys), flush=True)


def layouts_section(bench, tokens_list=(2048, 8192)) -> list[dict]:
    shape = SHAPES["gate/up_proj"]
    recs = [bench.sparse(layout, shape, tokens) for layout in Layout.every() for tokens in tokens_list]
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
                try:
                    last = bench.lt.max_alg_id(shape[0], shape[1], tokens, bench.dtype, layout)
                except RuntimeError as e:
                    recs.append(dict(layout=name, name=shape_name, tokens=tokens, alg_id=0, error=str(e)[:100]))
                    continue
                for alg_id in range(last + 1):
                    rec = bench.sparse(layout, shape, tokens, alg_id)
                    rec.update(name=shape_name, max_alg_id=last)
                    recs.append(rec)
    best = {}
    for r in recs:
        key = (r["layout"], r["name"], r["tokens"])
        if "error" not in r and (key not in best or r["sparse_ms"] < best[key]["sparse_ms"]):
            best[key] = r
    default = {(r["layout"], r["name"], r["tokens"]): r.get("sparse_ms") for r in recs if r["alg_id"] == 0}
    for r in best.values():
        r["default_alg_ms"] = default.get((r["layout"], r["name"], r["tokens"]))
    table(sorted(best.values(), key=lambda r: (r["name"], r["tokens"], r["sparse_ms"])),
          ["name", "tokens", "layout", "alg_id", "max_alg_id", "dense_ms", "default_alg_ms", "sparse_ms", "speedup"])
    return recs


def fastest_alg(bench, layout, shape, tokens) -> dict:
    """The fastest algorithm id of one product (kernel only)."""
    last = bench.lt.max_alg_id(shape[0], shape[1], tokens, bench.dtype, layout)
    recs = [bench.sparse(layout, shape, tokens, alg_id) for alg_id in range(last + 1)]
    return min((r for r in recs if "error" not in r), key=lambda r: r["sparse_ms"])


def mlp_section(bench, tokens_list=(2048, 8192)) -> list[dict]:
    """A whole LLaMA-7B MLP, dense against two sparse ways of running it.

    per-linear: three products as SparseLinear runs them (each output copied back to (tokens, out)).
    transposed: gate and up as one (22016, in) product into (features, tokens); SiLU-mul in that layout gives
    h^T, which down_proj takes as stored x^T; one copy back at the end (no copy between the products).
    """
    hidden, inter = 4096, 11008
    gen = torch.Generator(bench.device).manual_seed(7)
    w_gate, w_up, w_down = (make_operands(shape, 1, bench.dtype, bench.device, gen)[0]
                            for shape in ((inter, hidden), (inter, hidden), (hidden, inter)))
    w_gate_up = torch.cat([w_gate, w_up])
    plain, fused_l, down_t = Layout(), Layout(), Layout(x_t=True)
    lt, recs = bench.lt, []
    for tokens in tokens_list:
        x = torch.randn(tokens, hidden, dtype=bench.dtype, device=bench.device, generator=gen)

        def dense():
            return F.linear(F.silu(F.linear(x, w_gate)) * F.linear(x, w_up), w_down)

        algs = {name: fastest_alg(bench, lay, shape, tokens)["alg_id"] for name, lay, shape in (
            ("gate_up", fused_l, (2 * inter, hidden)), ("gate", plain, (inter, hidden)),
            ("down_t", down_t, (hidden, inter)), ("down", plain, (hidden, inter)))}
        c = {"gate": lt.compress(w_gate), "up": lt.compress(w_up), "down": lt.compress(w_down),
             "gate_up": lt.compress(w_gate_up, fused_l), "down_t": lt.compress(w_down, down_t)}

        def per_linear():
            g = contiguous(lt.linear(c["gate"], x, inter, algs["gate"]))
            u = contiguous(lt.linear(c["up"], x, inter, algs["gate"]))
            return contiguous(lt.linear(c["down"], F.silu(g) * u, hidden, algs["down"]))

        gu_plan = lt.plan(2 * inter, hidden, tokens, bench.dtype, algs["gate_up"], 1, fused_l)
        down_plan = lt.plan(hidden, inter, tokens, bench.dtype, algs["down_t"], 1, down_t)

        def transposed():
            gu = gu_plan.run(c["gate_up"], x)  # (2 * inter, tokens)
            h_t = F.silu(gu[:inter]) * gu[inter:]  # (inter, tokens): down_proj's input, stored transposed
            return contiguous(down_plan.run(c["down_t"], h_t).t())

        ref = dense()
        rec = dict(tokens=tokens, algs=algs, dense_ms=median_ms_graph(dense, bench.device))
        for name, fn in (("per_linear", per_linear), ("transposed", transposed)):
            rec[f"{name}_rel_err"] = rel_error(fn(), ref)
            rec[f"{name}_ms"] = median_ms_graph(fn, bench.device)
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
