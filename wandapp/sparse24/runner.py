"""The whole benchmark: tune cuSPARSELt (and CUTLASS on Hopper), sweep linear shapes, derive the dense/sparse
policy, time end to end."""

from __future__ import annotations

import platform
import time

import torch

from .cusparselt import DEFAULT_LAYOUTS, TORCH_LAYOUT, parse_layouts
from .cutlass_sparse import is_cutlass
from .end_to_end import (
    capture_prefill,
    compiled_blocks,
    decode_tokens_per_s,
    has_sparse_modules,
    logits_rel_error,
    random_ids,
    restore_dense_linears,
    swap_in_sparse_linears,
)
from .linear_sweep import DEFAULT_TOKENS, crossover_tokens, time_shape, tune_algorithms
from .mlp_sweep import time_mlp
from .sparse_linear import NEVER
from .sparse_mlp import DOWN_LAYOUT, GATE_UP_LAYOUT, down_layouts, gate_up_layouts
from .timing import alternating_medians

DEFAULT_CHOICE = (0, 1, TORCH_LAYOUT.name())  # (alg_id, split_k, layout): torch's
DEFAULT_MLP_CHOICE = ((0, 1, GATE_UP_LAYOUT), (0, 1, DOWN_LAYOUT))

SCHEMA_VERSION = 3  # 2: fused MLP records ("mlp"), compiled prefill rows; 3: CUTLASS choices, environment.cutlass


def environment(device) -> dict:
    import transformers

    env = dict(torch=torch.__version__, transformers=transformers.__version__, python=platform.python_version(),
               cuda=torch.version.cuda, date=time.strftime("%Y-%m-%d %H:%M:%S"))
    if device is not None and torch.device(device).type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), cusparselt=torch.backends.cusparselt.version(),
                   capability=".".join(map(str, torch.cuda.get_device_capability(device))))
    return env


def skipped_result(reason: str) -> dict:
    return dict(schema_version=SCHEMA_VERSION, skipped=True, reason=reason, environment=environment(None))


def model_shapes(model) -> dict[str, tuple[int, int]]:
    """Distinct (out, in) shapes of the prunable linears, named by their first linear's short name."""
    from ..adapter import DecoderAdapter

    shapes: dict[tuple[int, int], str] = {}
    for name, lin in DecoderAdapter.from_model(model).all_linears().items():
        shapes.setdefault((lin.out_features, lin.in_features), name.split(".")[-1])
    return {n: s for s, n in shapes.items()}


# Split-K factors the tuner tries. 2 and 4 would spread a product with few output tiles over more SMs, but
# cuSPARSELt 0.8 on the H100 refused them for every algorithm id and layout tried (measured), so only 1.
SPLIT_KS = (1,)


def tune(lt, shapes, dtype, device, tune_tokens=(2048, 8192), log=print, budget_s: float = 180.0,
         layouts=None, split_ks=SPLIT_KS, cutlass=None) -> dict:
    """Best (alg_id, split_k, layout) per shape and tuned token count, over cuSPARSELt's layouts and algorithms and,
    with `cutlass`, the CUTLASS kernels (a choice name as layout); stops tuning after `budget_s` seconds."""
    best = {}
    start = time.time()
    for name, shape in shapes.items():
        for tokens in tune_tokens:
            if time.time() - start > budget_s:
                log(f"tuning budget spent: {name} at {tokens} tokens keeps the default algorithm")
                continue
            recs = tune_algorithms(lt, name, shape, tokens, dtype, device, split_ks, layouts=layouts, cutlass=cutlass)
            ok = [r for r in recs if "sparse_ms" in r]
            errors = [r["error"] for r in recs if "error" in r]
            if errors:
                log(f"{len(errors)} of {len(recs)} algorithm settings refused, e.g. {errors[0]}")
            best[(shape, tokens)] = (ok[0]["alg_id"], ok[0]["split_k"], ok[0]["layout"]) if ok else DEFAULT_CHOICE
            default = [r["sparse_ms"] for r in ok if r["alg_id"] == 0 and r["split_k"] == 1
                       and r["layout"] == TORCH_LAYOUT.name()]
            log(f"tuned {name} {shape} at {tokens} tokens: (alg, split_k, layout) {best[(shape, tokens)]} "
                f"{ok[0]['sparse_ms'] if ok else float('nan'):.4f} ms, default {default[0] if default else 'n/a'}")
    return best


def tune_mlp(lt, hidden: int, inter: int, dtype, device, tune_tokens=(2048, 8192), log=print, layouts=None,
             split_ks=SPLIT_KS, cutlass=None) -> dict:
    """{tokens: (gate_up choice, down choice)}: the fastest (alg_id, split_k, layout) of the fused MLP's two
    products, each timed alone on operands as SparseGatedMLP stores them. Both products come from one library:
    the faster pair of cuSPARSELt's and (with `cutlass`) CUTLASS's."""
    layouts = layouts or parse_layouts(DEFAULT_LAYOUTS)
    best = {}
    for tokens in tune_tokens:
        pairs = {"cuSPARSELt": [], "CUTLASS": []}
        for name, shape, candidates in (("gate_up (fused)", (2 * inter, hidden), gate_up_layouts(layouts)),
                                        ("down", (hidden, inter), down_layouts(layouts))):
            recs = [r for r in tune_algorithms(lt, name, shape, tokens, dtype, device, split_ks, layouts=candidates,
                                               as_run=False, cutlass=cutlass) if "sparse_ms" in r]
            for library, picks in pairs.items():
                ok = [r for r in recs if is_cutlass(r["layout"]) == (library == "CUTLASS")]
                picks.append(ok[0] if ok else None)
        timed = {lib: sum(r["sparse_ms"] for r in picks) for lib, picks in pairs.items() if None not in picks}
        if not timed:
            log(f"fused MLP: no library ran both products at {tokens} tokens; the MLP stays per linear")
            return {}
        library = min(timed, key=timed.get)
        best[tokens] = tuple((r["alg_id"], r["split_k"], r["layout"]) for r in pairs[library])
        log(f"tuned fused MLP ({hidden}, {inter}) at {tokens} tokens: {library} {best[tokens]} "
            f"{timed[library]:.4f} ms; " + ", ".join(f"{lib} {ms:.4f} ms" for lib, ms in timed.items()))
    return best


def mlp_dims(shapes: dict) -> tuple[int, int] | None:
    """(hidden, inter) from the swept shapes (the gate projection's), or None."""
    gate = [shape for name, shape in shapes.items() if "gate" in name]
    return (gate[0][1], gate[0][0]) if gate else None


def make_mlp_policy(crossover: dict, best_mlp: dict):
    """mlp_policy(hidden, inter) -> (min_sparse_tokens, gate_up, down): sparse where both its shapes' linears win."""
    def mlp_policy(hidden, inter):
        crosses = [crossover.get(f"{inter}x{hidden}"), crossover.get(f"{hidden}x{inter}")]
        if not best_mlp or None in crosses:
            return NEVER, DEFAULT_MLP_CHOICE[0], DEFAULT_MLP_CHOICE[1]
        nearest = min(best_mlp, key=lambda t: abs(t - max(max(crosses), 2048)))
        return max(crosses), *best_mlp[nearest]

    return mlp_policy


def alg_chooser(best: dict, shape):
    """(alg_id, split_k, layout name) for a token count: the tuned entry of the nearest tuned token count."""
    tuned = sorted(t for (s, t) in best if s == shape)

    def choose(tokens: int):
        if not tuned:
            return DEFAULT_CHOICE
        return best[(shape, min(tuned, key=lambda t: abs(t - tokens)))]

    return choose


def make_policy(linear_records, best):
    """policy(out, in) -> (min_sparse_tokens, alg_id, split_k, layout): sparse from the measured crossover up."""
    table = {}
    for rec in linear_records:
        table.setdefault((rec["out_features"], rec["in_features"]), []).append(rec)

    def policy(out_f, in_f):
        recs = table.get((out_f, in_f), [])
        cross = crossover_tokens(recs)
        return (cross if cross is not None else NEVER), *alg_chooser(best, (out_f, in_f))(max(cross or 1, 2048))

    return policy, {f"{o}x{i}": policy(o, i)[0] if policy(o, i)[0] < NEVER else None for (o, i) in table}


def end_to_end(model, policy, device, prefill_cases, decode_cases, decode_steps=64, log=print, mlp_policy=None,
               compile_blocks: bool = True) -> dict:
    """Dense then sparse: logits tolerance, prefill ms per (batch, length), eager and with the decoder blocks
    compiled (the same for both models), and decode tokens/s per (batch, prompt).

    Each prefill case is captured in one CUDA graph per model, and the two graphs are timed alternately
    (`_time_prefills`): timed one model after the other, the H100's power-limited clock drifted between them
    and moved the speed-up by several percent. The dense graphs stay valid after the swap (the sparse modules
    keep the dense weights); the compiled pair is captured and timed inside one compile context, so the
    kernels inductor generated are alive while their graphs replay."""
    ids = random_ids(model, 1, 1024, device, seed=1)
    with torch.inference_mode():
        reference = model(input_ids=ids, use_cache=False).logits.float()
    rows = {"prefill": [], "decode": []}
    eager = _capture_prefills(model, "dense", False, prefill_cases, device)
    rows["decode"] += _decode(model, "dense", decode_cases, decode_steps, device, log)

    def swap():
        swapped = swap_in_sparse_linears(model, policy, mlp_policy)
        rows["swapped_linears"] = sum(v.startswith("sparse") for v in swapped.values())
        rows["fused_mlp_linears"] = sum(v == "sparse (fused MLP)" for v in swapped.values())
        rows["dense_linears"] = sum(not v.startswith("sparse") for v in swapped.values())

    compiled_rows = []
    if compile_blocks:
        try:
            with compiled_blocks(model):
                compiled = _capture_prefills(model, "dense", True, prefill_cases, device)
                swap()
                rows["compiled_logits_rel_err"] = logits_rel_error(model, reference, ids)
                compiled.update(_capture_prefills(model, "sparse", True, prefill_cases, device))
                compiled_rows = _time_prefills(compiled, device, log)
                del compiled
        except Exception as e:  # noqa: BLE001  torch.compile can fail on a machine (no compiler, a new model)
            rows["compile_error"] = f"{type(e).__name__}: {str(e)[:300]}"  # no compiled rows: no half-compared cases
            rows.pop("compiled_logits_rel_err", None)
            log(f"compiled prefill skipped: {rows['compile_error']}")
    if not has_sparse_modules(model):  # the compiled pass swapped them unless it failed first
        swap()
    rows["logits_rel_err"] = logits_rel_error(model, reference, ids)
    eager.update(_capture_prefills(model, "sparse", False, prefill_cases, device))
    rows["prefill"] = _time_prefills(eager, device, log) + compiled_rows
    del eager, reference
    rows["decode"] += _decode(model, "sparse", decode_cases, decode_steps, device, log)
    restore_dense_linears(model)
    rows["prefill_speedup"] = _speedups(rows["prefill"], "ms", lower_is_better=True)
    rows["decode_speedup"] = _speedups(rows["decode"], "tokens_per_s", lower_is_better=False)
    return rows


def _decode(model, kind: str, cases, steps: int, device, log) -> list[dict]:
    rows = []
    for batch, prompt in cases:
        tps = decode_tokens_per_s(model, batch, prompt, steps, device)
        rows.append(dict(kernel=kind, batch=batch, prompt_len=prompt, steps=steps, tokens_per_s=tps))
        log(f"decode {kind} batch {batch} prompt {prompt}: {tps:.1f} tok/s")
    return rows


def _capture_prefills(model, kind: str, compiled: bool, cases, device) -> dict:
    return {(compiled, batch, length, kind): capture_prefill(model, batch, length, device) for batch, length in cases}


def _time_prefills(graphs: dict, device, log, rounds: int = 3, iters: int = 5) -> list[dict]:
    """Rows of median ms per captured prefill, timed alternately (each case's dense graph, then its sparse one)."""
    order = sorted(graphs)  # (compiled, batch, length, kind)
    medians = alternating_medians({key: graphs[key][0] for key in order}, device, rounds, iters)
    rows = []
    for compiled, batch, length, kind in order:
        ms = medians[(compiled, batch, length, kind)]
        rows.append(dict(kernel=kind, compiled=compiled, batch=batch, prompt_len=length, ms=ms,
                         tokens_per_s=batch * length / ms * 1000))
        log(f"prefill {kind}{' compiled' if compiled else ''} batch {batch} x {length}: {ms:.2f} ms")
    return rows


def _speedups(rows, key, lower_is_better):
    case = lambda r: (r["batch"], r["prompt_len"], r.get("compiled", False))  # noqa: E731
    dense = {case(r): r[key] for r in rows if r["kernel"] == "dense"}
    out = []
    for r in rows:
        if r["kernel"] == "sparse" and case(r) in dense:
            d = dense[case(r)]
            out.append(dict(batch=r["batch"], prompt_len=r["prompt_len"], compiled=r.get("compiled", False),
                            speedup=(d / r[key]) if lower_is_better else (r[key] / d)))
    return out


def cutlass_context(device, dtype, mode: str, log=print):
    """(CutlassSparse or None, what happened): mode 'auto' uses the CUTLASS kernels where they can run (a Hopper
    GPU, float16, a library built or found), 'on' insists, 'off' skips them."""
    from ..errors import WandappError
    from .cutlass_sparse import available

    if mode == "off":
        return None, "off"
    reason = None
    if not available(torch.device(device)):
        reason = "not a Hopper GPU (the kernels are sm_90a)"
    elif dtype != torch.float16:
        reason = f"the kernels are float16 only, not {str(dtype)[6:]}"
    else:
        try:
            from .cutlass_ops import context_for

            return context_for(device), "used"
        except (WandappError, OSError) as e:
            reason = str(e)
    if mode == "on":
        raise WandappError(f"--cutlass on: {reason}")
    log(f"CUTLASS kernels not used: {reason}")
    return None, f"not used: {reason}"


def run_bench(model, shapes, device, dtype=torch.float16, tokens=DEFAULT_TOKENS, prefill_cases=((1, 2048),),
              decode_cases=((1, 512),), decode_steps=64, log=print, on_partial=None,
              tune_tokens=(2048, 8192), layouts=None, tune_budget_s: float = 180.0, fuse_mlp: bool = True,
              compile_blocks: bool = True, cutlass: str = "auto") -> dict:
    """Everything `wandapp bench` writes, as one JSON-ready dict. `layouts`: cuSPARSELt layouts the tuner tries;
    fuse_mlp: gated MLPs run as SparseGatedMLP; compile_blocks: also time prefill with compiled decoder blocks;
    cutlass: 'auto', 'on' or 'off', whether the tuner also tries the CUTLASS sm90 kernels."""
    from .cslt_ops import context_for

    lt = context_for(device)
    cutlass_ctx, cutlass_status = cutlass_context(device, dtype, cutlass, log)
    env = dict(environment(device), cusparselt_called=lt.version, cutlass=cutlass_status)
    result = dict(schema_version=SCHEMA_VERSION, skipped=False, environment=env,
                  dtype=str(dtype)[6:], timing="CUDA events around CUDA-graph replays, median; warm-up first")
    best = tune(lt, shapes, dtype, device, tune_tokens, log=log, budget_s=tune_budget_s, layouts=layouts,
                cutlass=cutlass_ctx)
    result["tuned_algorithms"] = [dict(out_features=s[0], in_features=s[1], tokens=t, alg_id=a, split_k=k, layout=lay)
                                  for (s, t), (a, k, lay) in best.items()]
    dims = mlp_dims(shapes) if fuse_mlp else None
    best_mlp = tune_mlp(lt, *dims, dtype, device, tune_tokens, log, layouts, cutlass=cutlass_ctx) if dims else {}
    result["tuned_mlp"] = [dict(tokens=t, gate_up=list(g), down=list(d)) for t, (g, d) in best_mlp.items()]
    linear = []
    for name, shape in shapes.items():
        linear += time_shape(name, shape, tokens, dtype, device, lt=lt, alg_for=alg_chooser(best, shape),
                             cutlass=cutlass_ctx)
        log(f"swept {name} {shape}")
    policy, crossover = make_policy(linear, best)
    for rec in linear:
        threshold = crossover[f"{rec['out_features']}x{rec['in_features']}"] or NEVER
        rec["chosen"] = "sparse" if rec["tokens"] >= threshold else "dense"
    result["linear"] = linear
    result["crossover_tokens"] = crossover
    result["tolerance"] = dict(linear_max_rel_err=max(r["rel_err"] for r in linear))
    mlp_policy = make_mlp_policy(crossover, best_mlp) if best_mlp else None
    if best_mlp:
        choose = lambda t: best_mlp[min(best_mlp, key=lambda k: abs(k - t))]  # noqa: E731
        result["mlp"] = time_mlp(*dims, [t for t in tokens if t >= 512], dtype, device, choose)
        result["tolerance"]["mlp_max_rel_err"] = max(r["rel_err"] for r in result["mlp"])
        for rec in result["mlp"]:
            log(f"MLP {dims} at {rec['tokens']} tokens: products {rec['products_speedup']:.2f}x, "
                f"module {rec['mlp_speedup']:.2f}x")
    if on_partial:
        on_partial(result)  # the linear tables survive a crash or time-out in the end-to-end part
    if model is not None:
        result["end_to_end"] = end_to_end(model, policy, device, prefill_cases, decode_cases, decode_steps, log,
                                          mlp_policy, compile_blocks)
        for key in ("logits_rel_err", "compiled_logits_rel_err"):
            if key in result["end_to_end"]:
                result["tolerance"][key] = result["end_to_end"][key]
    return result
