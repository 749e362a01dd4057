"""End-to-end prefill latency and decode throughput of a causal LM, with each forward replayed in a CUDA graph."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from ..adapter import DecoderAdapter
from ..masks import follows_nm
from .sparse_linear import SparseLinear
from .sparse_mlp import SparseGatedMLP, is_gated_mlp
from .timing import capture_graph, event_ms, median_ms_eager, replay_median_ms


def swap_in_sparse_linears(model: nn.Module, policy, mlp_policy=None, reference: bool = False) -> dict[str, str]:
    """Replace each 2:4 linear by a SparseLinear; `policy(out, in) -> (min_sparse_tokens, alg_id, split_k, layout)`.

    mlp_policy(hidden, inter) -> (min_sparse_tokens, gate_up choice, down choice), or None: each gated MLP whose
    linears are all 2:4 then becomes one SparseGatedMLP (gate and up fused). reference: the op's CPU kernel.
    Returns {linear name: 'sparse' | 'sparse (fused MLP)' | 'dense (not 2:4)'}.
    """
    adapter = DecoderAdapter.from_model(model)
    report = {}
    if mlp_policy is not None:
        for i, block in enumerate(adapter.blocks):
            mlp = adapter.mlp(block)
            if is_gated_mlp(mlp):
                min_tokens, gate_up, down = mlp_policy(mlp.gate_proj.in_features, mlp.gate_proj.out_features)
                adapter.set_mlp(block, SparseGatedMLP(mlp, min_tokens, gate_up, down, reference))
                report.update({f"layers.{i}.{n}": "sparse (fused MLP)" for n in adapter.mlp_linear_names})
    for name, linear in adapter.all_linears().items():
        if name in report:
            continue
        if not follows_nm(linear.weight, 2, 4):
            report[name] = "dense (not 2:4)"
            continue
        min_tokens, alg_id, split_k, layout = policy(linear.out_features, linear.in_features)
        parent_name, _, child = name.rpartition(".")
        parent = adapter.base.get_submodule(parent_name)
        setattr(parent, child, SparseLinear(linear, min_tokens, alg_id, split_k, layout, reference))
        report[name] = "sparse"
    return report


def restore_dense_linears(model: nn.Module) -> None:
    """Undo swap_in_sparse_linears (the sparse modules keep the dense weights)."""
    for name, module in list(model.named_modules()):
        parent_name, _, child = name.rpartition(".")
        if isinstance(module, SparseGatedMLP):
            setattr(model.get_submodule(parent_name), child, module.dense)
        elif isinstance(module, SparseLinear):
            linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                               device=module.weight.device, dtype=module.weight.dtype)
            linear.weight = module.weight
            if module.bias is not None:
                linear.bias = module.bias
            setattr(model.get_submodule(parent_name), child, linear)


def has_sparse_modules(model: nn.Module) -> bool:
    """Whether swap_in_sparse_linears left sparse modules in the model (restore_dense_linears takes them out)."""
    return any(isinstance(m, (SparseLinear, SparseGatedMLP)) for m in model.modules())


@contextmanager
def compiled_blocks(model: nn.Module, recompile_limit: int = 64):
    """Every decoder block run through torch.compile (inductor, default mode) inside the context.

    Both models of a comparison get the same treatment: inductor fuses the norms, rotary, activation and
    residual adds around the matrix products (cuBLAS for dense, the cslt_mm op for sparse), which eager HF
    runs as many small kernels. One compiled graph serves every block; each new shape or module type recompiles.
    """
    import torch._dynamo

    blocks = DecoderAdapter.from_model(model).blocks
    torch._dynamo.reset()
    try:
        with torch._dynamo.config.patch(recompile_limit=recompile_limit):
            for block in blocks:
                block.compile(dynamic=False)
            yield model
    finally:
        for block in blocks:
            block._compiled_call_impl = None  # what nn.Module.compile set
        torch._dynamo.reset()


UNMASKED_SDPA = "sdpa_is_causal"


@contextmanager
def unmasked_causal_attention(model: nn.Module):
    """SDPA attention with no explicit mask inside the context: its `is_causal` flag (flash kernels) does the masking.

    Exact for what the prefill benchmark runs, whole unpadded sequences from position 0. transformers passes
    no mask to SDPA when it can skip one, but not while a CUDA graph is being captured: it then built a
    (tokens x tokens) mask and SDPA ran a slower masked kernel, and compiled blocks recompiled mid-capture
    (measured with transformers 5.17). An attention implementation that transformers has no mask function for
    gets no mask; this one is its own SDPA under another name.
    """
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    before = model.config._attn_implementation
    if before != "sdpa":  # other implementations build their mask the same way in and out of capture
        yield model
        return
    AttentionInterface.register(UNMASKED_SDPA, sdpa_attention_forward)  # by name: registering twice is harmless
    model.set_attn_implementation(UNMASKED_SDPA)
    try:
        yield model
    finally:
        model.set_attn_implementation(before)


def random_ids(model, batch: int, length: int, device, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator(device).manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (batch, length), device=device, generator=gen)


@torch.inference_mode()
def prefill_ms(model, batch: int, length: int, device, graph: bool = True) -> float:
    """Median ms of one forward over (batch, length) tokens, logits of the last position only (as a server does)."""
    if graph:
        return replay_median_ms(capture_prefill(model, batch, length, device)[0], device, iters=10)
    ids = random_ids(model, batch, length, device)
    with unmasked_causal_attention(model):
        return median_ms_eager(lambda: model(input_ids=ids, use_cache=False, logits_to_keep=1), device, warmup=2,
                               iters=5)


@torch.inference_mode()
def capture_prefill(model, batch: int, length: int, device) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
    """One prefill forward captured in a CUDA graph, and the input ids it reads on every replay (keep both).

    The graph holds its memory pool, and the swapped-out dense weights stay alive in the sparse modules, so a
    dense model's graph still replays after the swap: `end_to_end` captures both models, then times them
    alternately."""
    ids = random_ids(model, batch, length, device)
    with unmasked_causal_attention(model):
        graph = capture_graph(lambda: model(input_ids=ids, use_cache=False, logits_to_keep=1), device)
    return graph, ids


@torch.inference_mode()
def decode_tokens_per_s(model, batch: int, prompt_len: int, steps: int, device) -> float:
    """Tokens/s of greedy-shaped decode steps after a prompt, each step one graph replay on a static KV cache."""
    from transformers import StaticCache

    cache = StaticCache(config=model.config, max_cache_len=prompt_len + steps + 8)
    ids = random_ids(model, batch, prompt_len, device)
    model(input_ids=ids, past_key_values=cache, cache_position=torch.arange(prompt_len, device=device),
          use_cache=True, logits_to_keep=1)
    step_ids = ids[:, -1:].clone()
    position = torch.tensor([prompt_len], device=device)

    def step():
        out = model(input_ids=step_ids, past_key_values=cache, cache_position=position, use_cache=True)
        step_ids.copy_(out.logits[:, -1:].argmax(-1))
        position.add_(1)

    graph = capture_graph(step, device)  # its warm-up runs 3 steps; the cache has room for them
    position.fill_(prompt_len + 3)
    return batch * steps / (event_ms(graph.replay, steps) / 1000)


@torch.inference_mode()
def logits_rel_error(model_sparse, reference_logits, ids) -> float:
    out = model_sparse(input_ids=ids, use_cache=False).logits.float()
    return float((out - reference_logits).norm() / reference_logits.norm())
