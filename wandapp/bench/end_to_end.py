"""End-to-end prefill latency and decode throughput of a causal LM, with each forward replayed in a CUDA graph."""

from __future__ import annotations

import torch
from torch import nn

from ..adapter import DecoderAdapter
from .sparse_linear import SparseLinear
from .sparsity import is_2of4
from .timing import capture_graph, median_ms_eager, median_ms_graph


def swap_in_sparse_linears(model: nn.Module, policy, lt=None) -> dict[str, str]:
    """Replace each 2:4 linear by a SparseLinear; `policy(out, in) -> (min_sparse_tokens, alg_id, split_k, layout)`.

    Returns {linear name: 'sparse' | 'dense (not 2:4)'} so the result says which layers were swapped.
    """
    adapter = DecoderAdapter.from_model(model)
    report = {}
    for name, linear in adapter.all_linears().items():
        if not is_2of4(linear.weight):
            report[name] = "dense (not 2:4)"
            continue
        min_tokens, alg_id, split_k, layout = policy(linear.out_features, linear.in_features)
        parent_name, _, child = name.rpartition(".")
        parent = adapter.base.get_submodule(parent_name)
        setattr(parent, child, SparseLinear(linear, min_tokens, alg_id, split_k, lt, layout))
        report[name] = "sparse"
    return report


def restore_dense_linears(model: nn.Module) -> None:
    """Undo swap_in_sparse_linears (the SparseLinear keeps the dense weight)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, SparseLinear):
            linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None,
                               device=module.weight.device, dtype=module.weight.dtype)
            linear.weight = module.weight
            if module.bias is not None:
                linear.bias = module.bias
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, linear)


def random_ids(model, batch: int, length: int, device, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator(device).manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (batch, length), device=device, generator=gen)


@torch.inference_mode()
def prefill_ms(model, batch: int, length: int, device, graph: bool = True) -> float:
    """Median ms of one forward over (batch, length) tokens, logits of the last position only (as a server does)."""
    ids = random_ids(model, batch, length, device)
    fn = lambda: model(input_ids=ids, use_cache=False, logits_to_keep=1)  # noqa: E731
    if graph:
        return median_ms_graph(fn, device, calls=1, iters=10)
    return median_ms_eager(fn, device, warmup=2, iters=5)


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
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(steps):
        graph.replay()
    end.record()
    end.synchronize()
    return batch * steps / (start.elapsed_time(end) / 1000)


@torch.inference_mode()
def logits_rel_error(model_sparse, reference_logits, ids) -> float:
    out = model_sparse(input_ids=ids, use_cache=False).logits.float()
    return float((out - reference_logits).norm() / reference_logits.norm())
