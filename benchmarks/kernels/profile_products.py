"""One dense and one 2:4 product per library, for Nsight Compute to read their hardware counters.

    ncu --clock-control none --profile-from-start off --section SpeedOfLight --section MemoryWorkloadAnalysis \
        --section ComputeWorkloadAnalysis --section WarpStateStats --csv --page details \
        python -m benchmarks.kernels.profile_products --shape 22016,4096 --tokens 8192 > profile.csv

Random 2:4 float16 weights, LLaMA-7B shapes; each product runs three times unprofiled, then once between
cudaProfilerStart and Stop, so ncu sees exactly one launch of each, in this order: cuBLAS (F.linear), the
CUTLASS choices and the cuSPARSELt choice given. Without ncu it just prints the three products' relative errors.
"""

from __future__ import annotations

import argparse
import functools

import torch
import torch.nn.functional as F

from wandapp.sparse24 import cslt_ops, cutlass_ops
from wandapp.sparse24.cusparselt import Layout, stored_input
from wandapp.sparse24.linear_sweep import make_operands, rel_error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="22016,4096", help="out,in features (default: gate+up fused)")
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--cutlass", default="cutlass/256x128x128_c1x1_coop/swizzle1/along_n",
                        help="CUTLASS choices, comma-separated")
    parser.add_argument("--cslt", default="25,1,sparseB+y_t", help="alg_id,split_k,layout")
    args = parser.parse_args()
    device = torch.device("cuda", torch.cuda.current_device())
    out_f, in_f = (int(v) for v in args.shape.split(","))
    weight, x = make_operands((out_f, in_f), args.tokens, torch.float16, device, torch.Generator(device).manual_seed(0))
    alg, split_k, layout = args.cslt.split(",")
    compressed = cslt_ops.compress(weight, Layout.parse(layout))
    x_stored = stored_input(x, Layout.parse(layout))  # x^T for the x_t layouts
    products = {"cublas": lambda: F.linear(x, weight)}
    for choice in args.cutlass.split(","):
        values, meta = cutlass_ops.compress(weight, choice)
        products[choice] = functools.partial(torch.ops.wandapp.cutlass_mm, values, meta, x, out_f, choice)
    products[args.cslt] = lambda: torch.ops.wandapp.cslt_mm(compressed, x_stored, out_f, int(alg), int(split_k), layout)
    ref = products["cublas"]()
    for name, fn in products.items():
        for _ in range(3):
            y = fn()
        y = y.t() if y.shape != ref.shape else y  # cuSPARSELt's y_t layouts write (out, tokens)
        print(f"{name}: rel_err {rel_error(y, ref):.2e}", flush=True)
    torch.cuda.synchronize(device)
    torch.cuda.profiler.start()
    for fn in products.values():
        fn()
    torch.cuda.synchronize(device)
    torch.cuda.profiler.stop()


if __name__ == "__main__":
    main()
