"""Running a pre-norm decoder block stage by stage over all calibration samples.

Sequential pruning needs, for each linear group in forward order, statistics of its input over all samples,
measured with the earlier groups already pruned. One partial forward per group repeats the early stages (1.36 block
forwards per prune, 2.36 with the block's outputs). Here each stage runs once over all samples and keeps its
activations until the next stage has read them: 0.78 forwards (1.45 with outputs). The walker decides when a block
may be run this way (adapter.BlockParts, checked against the block's own forward).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Callable, Iterator

import torch
from torch import nn

from .adapter import BlockParts

if TYPE_CHECKING:
    from .walker import BlockContext


class StopForward(Exception):
    """Raised from a hook to skip the rest of a forward pass."""


def block_output(result) -> torch.Tensor:
    """Decoder blocks return a tensor (transformers 5) or a tuple whose first item is the hidden state (4.x)."""
    return result[0] if isinstance(result, (tuple, list)) else result


def attention(ctx: BlockContext, parts: BlockParts, normed: torch.Tensor) -> torch.Tensor:
    return block_output(parts.attn(hidden_states=normed, **ctx.kwargs_for(normed.dtype)))


def staged_forward(ctx: BlockContext, parts: BlockParts, x: torch.Tensor) -> torch.Tensor:
    h = x + attention(ctx, parts, parts.ln1(x))
    return h + parts.mlp(parts.ln2(h))


def prune_in_stages(ctx: BlockContext, block: nn.Module, parts: BlockParts, make_stat, prune_group,
                    outputs: bool, samples) -> torch.Tensor | None:
    """BlockContext.prune_in_order for a block that splits into `parts`."""
    qkv, o, gate_up, down = ctx.groups
    dtype, store, device = ctx.dtype_of(block), ctx.inputs.device, ctx.device
    linear = block.get_submodule

    def inputs():  # converted batch by batch, twice, rather than held as a second copy of all inputs
        return (x.to(dtype) for x in ctx.batches(samples))

    # 1. q, k, v read ln1(x)
    normed = [parts.ln1(x).to(store) for x in inputs()]
    prune_group(qkv, _feed(make_stat, qkv, block, normed, device))
    # 2. o_proj reads the attention output: run attention up to o_proj and keep its input
    attn_in = [input_of(linear(o[0]), lambda n=n: attention(ctx, parts, n.to(device))) for n in _drain(normed)]
    prune_group(o, _feed(make_stat, o, block, attn_in, device))
    # 3. gate and up read ln2(h), h = x + o_proj(attention output)
    resid, normed = [], []
    for x, a in zip(inputs(), _drain(attn_in)):
        h = x + linear(o[0])(a.to(device))
        normed.append(parts.ln2(h).to(store))
        if outputs:
            resid.append(h.to(store))
    prune_group(gate_up, _feed(make_stat, gate_up, block, normed, device))
    # 4. down_proj reads act(gate) * up: its statistics stream, nothing is kept
    stat = make_stat(linear(down[0]))
    for n in normed:
        stat.add(input_of(linear(down[0]), lambda n=n: parts.mlp(n.to(device))))
    prune_group(down, {name: stat for name in down})
    if not outputs:
        return None
    return torch.cat([(h.to(device) + parts.mlp(n.to(device))).to(store, ctx.inputs.dtype)
                      for h, n in zip(resid, normed)])


def input_of(linear: nn.Linear, forward: Callable[[], object]) -> torch.Tensor:
    """The input `linear` receives during `forward()`, which is stopped right there."""
    seen = {}

    def hook(module, args):
        seen["x"] = args[0]
        raise StopForward

    handle = linear.register_forward_pre_hook(hook)
    try:
        with contextlib.suppress(StopForward):
            forward()
    finally:
        handle.remove()
    return seen["x"]


def _feed(make_stat, names, block: nn.Module, tensors, device) -> dict:
    stat = make_stat(block.get_submodule(names[0]))
    for t in tensors:
        stat.add(t.to(device))
    return {name: stat for name in names}


def _drain(items: list) -> Iterator:
    """Yield a list's items, dropping each from the list as it goes, so one stage's activations are freed while
    the next stage's are made (peak: about one stage, not two)."""
    for i in range(len(items)):
        item, items[i] = items[i], None
        yield item
