"""Dense against 2:4 sparse for one linear shape over token counts, timed inside CUDA graphs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .sparsity import random_2of4_
from .timing import median_ms_eager, median_ms_graph
from .transpose import contiguous

# The token counts of the issue: decode (1) up to long prefill (8192).
DEFAULT_TOKENS = (1, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
LLAMA7B_SHAPES = {  # (out_features, in_features)
    "q/k/v/o_proj": (4096, 4096),
    "gate/up_proj": (11008, 4096),
    "down_proj": (4096, 11008),
}


def sparse_call(compressed, x, layout: str, alg_id: int = 0, split_k: int = 1):
    """One cuSPARSELt product in a given operand layout; every layout returns (tokens, out) values."""
    if layout == "transpose_result":  # x is (tokens, in); output written (tokens, out)
        return torch._cslt_sparse_mm(compressed, x.t(), transpose_result=True, alg_id=alg_id, split_k=split_k)
    if layout == "out_t":  # output (out, tokens); the caller sees its transpose, not contiguous
        return torch._cslt_sparse_mm(compressed, x.t(), alg_id=alg_id, split_k=split_k).t()
    if layout == "x_t_rowmajor":  # x given already transposed and contiguous (in, tokens): activations kept transposed
        return torch._cslt_sparse_mm(compressed, x, alg_id=alg_id, split_k=split_k).t()
    raise ValueError(layout)


def search_alg(compressed, x, layout: str) -> int:
    dense_b = x if layout == "x_t_rowmajor" else x.t()
    return int(torch._cslt_sparse_mm_search(compressed, dense_b, transpose_result=layout == "transpose_result"))


def make_operands(shape, tokens, dtype, device, generator=None):
    out_f, in_f = shape
    weight = random_2of4_(torch.empty(out_f, in_f, dtype=dtype, device=device), generator)
    x = torch.randn(tokens, in_f, dtype=dtype, device=device, generator=generator)
    return weight, x


def rel_error(y, ref) -> float:
    y, ref = y.float(), ref.float()
    return float((y - ref).norm() / ref.norm().clamp_min(1e-30))


def time_shape(name, shape, tokens_list, dtype, device, layout="out_t", lt=None, alg_for=None, eager=False,
               cutlass=None):
    """Records {shape, tokens, dense_ms, sparse_ms, speedup, alg_id, rel_err} for one weight shape.

    With `lt` (a CusparseLt context) the sparse product uses cached plans;
    `alg_for(tokens) -> (alg_id, split_k, layout name)`, where a CUTLASS choice name runs on `cutlass`.
    Without it, torch._cslt_sparse_mm in the given layout, default algorithm.
    """
    from .cusparselt import TORCH_LAYOUT, Layout
    from .cutlass_sparse import Choice, is_cutlass

    gen = torch.Generator(device).manual_seed(0)
    weight, _ = make_operands(shape, 1, dtype, device, gen)
    compressed = {}
    records = []
    for tokens in tokens_list:
        x = torch.randn(tokens, shape[1], dtype=dtype, device=device, generator=gen)
        alg_id, split_k, layout_name = alg_for(tokens) if alg_for else (0, 1, TORCH_LAYOUT.name())
        if lt and is_cutlass(layout_name):
            choice = Choice.parse(layout_name)
            family = cutlass.families[choice.config]
            if family not in compressed:
                compressed[family] = cutlass.compress(weight, family)
            sparse = lambda: cutlass.linear(*compressed[family], x, shape[0], choice)  # noqa: E731
        elif lt:
            lay = Layout.parse(layout_name)
            if lay not in compressed:
                compressed[lay] = lt.compress(weight, lay)
            sparse = lambda: lt.linear(compressed[lay], x, shape[0], alg_id, split_k, lay)  # noqa: E731
        else:
            if not compressed:
                compressed[None] = torch._cslt_compress(weight)
            xin = x.t().contiguous() if layout == "x_t_rowmajor" else x
            sparse = lambda: sparse_call(compressed[None], xin, layout, alg_id, split_k)  # noqa: E731
        err = rel_error(sparse(), F.linear(x, weight))
        dense_ms = median_ms_graph(lambda: F.linear(x, weight), device)
        sparse_ms = median_ms_graph(sparse, device)
        # What SparseLinear runs: the kernel plus one copy to a contiguous (tokens, out) output.
        layer_ms = median_ms_graph(lambda: contiguous(sparse()), device)
        rec = dict(name=name, out_features=shape[0], in_features=shape[1], tokens=tokens, dtype=str(dtype)[6:],
                   backend=("cutlass-sm90" if is_cutlass(layout_name) else "cusparselt-cached-plan") if lt
                   else f"torch-cslt-{layout}", alg_id=alg_id,
                   layout=layout_name if lt else layout,
                   split_k=split_k, dense_ms=dense_ms, sparse_ms=sparse_ms, speedup=dense_ms / sparse_ms,
                   sparse_layer_ms=layer_ms, layer_speedup=dense_ms / layer_ms,
                   rel_err=err, dense_tflops=2 * shape[0] * shape[1] * tokens / dense_ms / 1e9,
                   sparse_tflops_dense_equiv=2 * shape[0] * shape[1] * tokens / sparse_ms / 1e9)
        if eager:
            rec["dense_eager_ms"] = median_ms_eager(lambda: F.linear(x, weight), device)
            rec["sparse_eager_ms"] = median_ms_eager(sparse, device)
        records.append(rec)
    return records


def tune_algorithms(lt, name, shape, tokens, dtype, device, split_ks=(1,), max_algs=None, layouts=None,
                    as_run: bool = True, cutlass=None, cutlass_top: int | None = 3, operands=None):
    """Time every layout x algorithm id (x split-k) for one shape and token count, and with `cutlass` (a
    CutlassSparse) the CUTLASS kernel choices too; records, fastest first.

    layouts: cuSPARSELt's layouts to try (None: torch's; empty: none, CUTLASS alone). cutlass_top: every CUTLASS
    config is timed in both raster orders, then the other tile swizzles of the `cutlass_top` fastest configs
    (None: of every config, all the choices there are).

    as_run: time the layer as SparseLinear runs it: the product plus, for a layout that writes (out, tokens),
    the copy to a contiguous (tokens, out) output. Otherwise the product alone on operands as the layout stores
    them (for a module that keeps its activations in that layout). max_algs=None tries every algorithm id:
    on the H100 the fastest was id 25 of 0-27 for most shapes (1.4-1.5x where id 0 gave 0.9-1.3x at 2048 tokens).
    CUTLASS records carry the choice's name as their layout (their output is (tokens, out) already).
    operands: the (weight, x) to time, for a caller that times them otherwise too; None: random ones.
    """
    from .cusparselt import TORCH_LAYOUT, stored_input
    from .cutlass_sparse import Choice, is_cutlass

    weight, x = operands or make_operands(shape, tokens, dtype, device, torch.Generator(device).manual_seed(1))
    ref = F.linear(x, weight)
    records = []

    def timed(layout_name, alg_id, split_k, product, fn):
        head = dict(name=name, tokens=tokens, layout=layout_name, alg_id=alg_id, split_k=split_k)
        try:
            err = rel_error(product(), ref)
            ms = median_ms_graph(fn, device, calls=5, iters=7)
        except RuntimeError as e:  # a split-k, algorithm or kernel config some layouts or shapes refuse
            return records.append(dict(head, error=str(e)[:120]))
        if err > 1e-2:  # a wrong product never wins
            return records.append(dict(head, error=f"rel_err {err:.3g}"))
        records.append(dict(head, out_features=shape[0], in_features=shape[1], sparse_ms=ms, rel_err=err))

    for layout in (TORCH_LAYOUT,) if layouts is None else layouts:
        try:
            compressed = lt.compress(weight, layout)
            last = lt.max_alg_id(shape[0], shape[1], tokens, dtype, layout)
            last = last if max_algs is None else min(last, max_algs - 1)
        except RuntimeError as e:  # a layout this cuSPARSELt refuses
            records.append(dict(name=name, tokens=tokens, layout=layout.name(), error=str(e)[:120]))
            continue
        x_stored = stored_input(x, layout)
        padded = x_stored.shape[1] if layout.x_t else x_stored.shape[0]
        for alg_id in range(last + 1):
            for split_k in split_ks:
                product = lambda: lt.linear(compressed, x, shape[0], alg_id, split_k, layout)  # noqa: E731
                if as_run:
                    fn = lambda: contiguous(product())  # noqa: E731
                else:  # the product alone on stored operands; the cached plan is looked up at capture only
                    fn = lambda: lt.plan(shape[0], shape[1], padded, dtype, alg_id, split_k,  # noqa: E731
                                         layout).run(compressed, x_stored)
                timed(layout.name(), alg_id, split_k, product, fn)
    if cutlass is not None:  # cutlass_context hands one out only where the kernels run (Hopper, float16)
        packed = {family: cutlass.compress(weight, family) for family in set(cutlass.families)}
        out = torch.empty_like(ref)

        def time_choices(choices):
            for choice in choices:
                values, meta = packed[cutlass.families[choice.config]]
                timed(choice.name(), 0, 1, lambda: cutlass.linear(values, meta, x, shape[0], choice),
                      lambda: cutlass.linear(values, meta, x, shape[0], choice, out))

        time_choices(cutlass.choices(swizzles=(1,)))
        ranked = sorted((r for r in records if "sparse_ms" in r and is_cutlass(r["layout"])),
                        key=lambda r: r["sparse_ms"])
        top = list(dict.fromkeys(Choice.parse(r["layout"]).config for r in ranked))[:cutlass_top]
        time_choices([c for c in cutlass.choices(swizzles=(2, 4, 8)) if c.config in top])
    return sorted(records, key=lambda r: r.get("sparse_ms", float("inf")))


def crossover_tokens(records, margin: float = 1.02) -> int | None:
    """Smallest token count from which sparse beats dense by `margin` at every larger count measured; None if never.

    Sparse must win both as the bare product and as the layer runs (output copy included): two timings of the
    same CUTLASS kernel differed by 15% at one token on the H100, enough to send decode to the slower kernel.
    """
    best = None
    for rec in sorted(records, key=lambda r: r["tokens"], reverse=True):
        if min(rec["speedup"], rec.get("layer_speedup", rec["speedup"])) < margin:
            break
        best = rec["tokens"]
    return best
