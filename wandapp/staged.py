"""Running a pre-norm decoder block stage by stage over all calibration samples.

Sequential pruning needs, for each linear group in forward order, statistics of its input over all samples,
measured with the earlier groups already pruned. One partial forward per group repeats the early stages (1.36 block
forwards per prune, 2.36 with the block's outputs). Here each stage runs once over all samples and keeps its
activations until the next stage has read them: 0.78 forwards (1.45 with outputs; 1.0 where down_proj's inputs
can be kept, see stage 4). The walker decides when a block may be run this way (adapter.BlockParts, checked
against the block's own forward).
"""

from __future__ import annotations

import contextlib
import os
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


def tap_names(groups) -> tuple[str, str]:
    """The attribute names of o_proj in the attention and of down_proj in the MLP (for block_runner's taps)."""
    return groups[1][0].rsplit(".", 1)[-1], groups[3][0].rsplit(".", 1)[-1]


def dense_statistics(ctx: BlockContext, block: nn.Module, parts: BlockParts, make_stat, samples) -> dict:
    """Every linear's input statistics on the unpruned block (Wanda's pass, BlockContext.collect) through the
    runner's stage functions, which torch.compile can trace: ln1(x) for q/k/v, the attention tapped at o_proj,
    ln2(x + o_proj(a)) for gate/up, the MLP tapped at down_proj. down_proj itself never runs."""
    o_name, down_name = tap_names(ctx.groups)
    runner, linear, dtype = ctx.runner, block.get_submodule, ctx.dtype_of(block)
    own = {group[0]: make_stat(linear(group[0])) for group in ctx.groups}
    for x in ctx.batches(samples):
        x = x.to(dtype)
        n1 = runner.norm(parts.ln1, x)
        a = runner.attention_input_of(parts.attn, o_name, n1, ctx.kwargs_for(dtype))
        _, n2 = runner.residual_norm(linear(ctx.groups[1][0]), parts.ln2, x, a)
        m = runner.mlp_input_of(parts.mlp, down_name, n2)
        for group, t in zip(ctx.groups, (n1, a, n2, m)):
            own[group[0]].add(t)
    return {name: own[group[0]] for group in ctx.groups for name in group}


def prune_in_stages(ctx: BlockContext, block: nn.Module, parts: BlockParts, make_stat, prune_group,
                    outputs: bool, samples) -> torch.Tensor | None:
    """BlockContext.prune_in_order for a block that splits into `parts`. Each stage runs through ctx.runner;
    a compiled runner reads o_proj's and down_proj's inputs by taps (traceable), an eager one by hooks."""
    qkv, o, gate_up, down = ctx.groups
    dtype, store, device, runner = ctx.dtype_of(block), ctx.inputs.device, ctx.device, ctx.runner
    linear = block.get_submodule
    down_proj = linear(down[0])
    taps = runner.compile and ctx.taps_match(block, parts)
    o_name, down_name = tap_names(ctx.groups)

    def attention_input(n):  # what o_proj reads
        if taps:
            return runner.attention_input_of(parts.attn, o_name, n, ctx.kwargs_for(n.dtype))
        return input_of(linear(o[0]), lambda: attention(ctx, parts, n))

    def mlp_input(n):  # what down_proj reads
        return runner.mlp_input_of(parts.mlp, down_name, n) if taps else input_of(down_proj, lambda: parts.mlp(n))

    def inputs():  # converted batch by batch, twice, rather than held as a second copy of all inputs
        return (x.to(dtype) for x in ctx.batches(samples))

    # 1. q, k, v read ln1(x)
    normed = [runner.norm(parts.ln1, x).to(store) for x in inputs()]
    prune_group(qkv, _feed(make_stat, qkv, block, normed, device))
    # 2. o_proj reads the attention output: run attention up to o_proj and keep its input
    attn_in = [attention_input(n.to(device)).to(store) for n in _drain(normed)]
    prune_group(o, _feed(make_stat, o, block, attn_in, device))
    # 3. gate and up read ln2(h), h = x + o_proj(attention output)
    resid, normed = [], []
    for x, a in zip(inputs(), _drain(attn_in)):
        h, n = runner.residual_norm(linear(o[0]), parts.ln2, x, a.to(device))
        normed.append(n.to(store))
        if outputs:
            resid.append(h.to(store))
    prune_group(gate_up, _feed(make_stat, gate_up, block, normed, device))
    # 4. down_proj reads act(gate) * up: its statistics stream. With outputs, those inputs are kept where there is
    #    room (the MLP being down_proj of them), so the outputs need down_proj alone, not gate and up again:
    #    the same values (the same batches through the same pruned gate and up), 0.43 of a forward less.
    keep = outputs and _mlp_ends_in(parts, down_proj, normed[0][:1].to(device)) and _room_for(
        store, device, normed, down_proj.in_features)
    stat, kept = make_stat(down_proj), []
    for n in (_drain(normed) if keep else normed):
        a = mlp_input(n.to(device))
        stat.add(a)
        if keep:
            kept.append(a.to(store))
    prune_group(down, {name: stat for name in down})
    if not outputs:
        return None
    ctx.log["kept_mlp_inputs"] = keep
    rows = sum(h.shape[0] for h in resid)
    if keep:
        return _fill(ctx, rows, (runner.residual_linear(down_proj, h.to(device), a.to(device))
                                 for h, a in zip(_drain(resid), _drain(kept))))
    return _fill(ctx, rows, (h.to(device) + runner.mlp(parts.mlp, n.to(device))
                             for h, n in zip(_drain(resid), _drain(normed))))


def _fill(ctx: BlockContext, rows: int, batches) -> torch.Tensor:
    """The block's outputs, batch by batch into one tensor stored like the inputs (no list + cat copy)."""
    out = torch.empty((rows, *ctx.inputs.shape[1:]), dtype=ctx.inputs.dtype, device=ctx.inputs.device)
    s = 0
    for y in batches:
        out[s : s + y.shape[0]] = y.to(out.device, out.dtype)
        s += y.shape[0]
    return out


def _mlp_ends_in(parts: BlockParts, down_proj: nn.Linear, n: torch.Tensor) -> bool:
    """Is the MLP's output down_proj of down_proj's input (checked on one sample)?"""
    a = input_of(down_proj, lambda: parts.mlp(n))
    return torch.equal(parts.mlp(n), down_proj(a))


def _room_for(store: torch.device, device: torch.device, normed: list, width: int) -> bool:
    """Room to keep every sample's down_proj input (tokens x width) on `store` with a margin: kept on the compute
    device only (over PCIe the copies cost more than running gate and up again)."""
    if store.type != device.type:
        return False
    tokens = sum(n.shape[0] * n.shape[1] for n in normed)
    need = tokens * width * normed[0].element_size() * 1.25 + 2**30
    if store.type == "cuda":
        free, _ = torch.cuda.mem_get_info(store)
        free += torch.cuda.memory_reserved(store) - torch.cuda.memory_allocated(store)
        return free > need
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return False
    return free / 2 > need


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
