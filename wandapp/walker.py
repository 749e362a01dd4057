"""The one sequential block-walker every method uses.

It captures the hidden states (and every keyword argument: rotary embeddings, masks, positions) that enter the
first decoder block, then walks the blocks: each block moves to the compute device, the method prunes it with its
calibration inputs, and the pruned block's outputs become the next block's inputs, so errors propagate as in
Wanda and SparseGPT. Only the current block (and whatever the method adds) lives on the compute device.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .adapter import LINEAR_GROUPS, LINEAR_NAMES, BlockParts, DecoderAdapter
from .block_runner import BlockRunner
from .offload import BlockShuttle, OverlappedShuttle, module_tensors
from .staged import StopForward as _StopForward
from .staged import attention, dense_statistics, prune_in_stages, staged_forward
from .staged import tap_names as _tap_names


class Stat(Protocol):
    def add(self, x: torch.Tensor) -> None: ...


def _map_tensors(obj, fn):
    """`fn` applied to every tensor inside nested tuples, lists and dicts (a block's keyword arguments)."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (tuple, list)):  # plain tuple/list, as the block takes them
        mapped = [_map_tensors(o, fn) for o in obj]
        return tuple(mapped) if isinstance(obj, tuple) else mapped
    if isinstance(obj, dict):
        return {k: _map_tensors(v, fn) for k, v in obj.items()}
    return obj


def module_device(module: nn.Module) -> torch.device | None:
    for t in itertools.chain(module.parameters(), module.buffers()):
        return t.device
    return None


@contextlib.contextmanager
def on_device(modules: Sequence[nn.Module], device: torch.device) -> Iterator[None]:
    """Put the modules' tensors on `device` for the duration, for reading only (embeddings, norm, head).

    Each parameter and buffer gets its own tensor back afterwards, the same storage: no copy home, and a caller
    that holds the model's CPU tensors (a shuttle's staging, a user's reference) still sees them.
    """
    homes = {id(t): (t, t.data) for m in modules for t in module_tensors(m)}
    try:
        for t, home in homes.values():
            t.data = home.to(device)
        yield
    finally:
        for t, home in homes.values():
            t.data = home


@torch.no_grad()
def capture_block_inputs(
    model: nn.Module, adapter: DecoderAdapter, input_ids: torch.Tensor, device: torch.device, store: torch.device
) -> tuple[torch.Tensor, dict]:
    """Hidden states entering block 0 for each row of `input_ids` (N, T), and the block's other keyword arguments.

    Rows are run one at a time, so the captured kwargs have batch size 1 and broadcast over any micro-batch.
    """
    n, t = input_ids.shape
    dtype = adapter.embed_tokens.weight.dtype
    hidden = torch.empty(n, t, model.config.hidden_size, dtype=dtype, device=store)
    captured: dict = {}

    def hook(module, args, kwargs):
        x = args[0] if args else kwargs.pop("hidden_states")
        captured["x"] = x
        captured["kwargs"] = {k: v for k, v in kwargs.items() if k not in ("hidden_states",)}
        raise _StopForward

    handle = adapter.blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    extras = [m for m in (adapter.embed_tokens, adapter.rotary_emb) if m is not None]
    try:
        with on_device(extras, device):
            for i in range(n):
                with contextlib.suppress(_StopForward):
                    model(input_ids[i : i + 1].to(device), use_cache=False)
                hidden[i] = captured["x"][0].to(store)
    finally:
        handle.remove()
    kwargs = captured["kwargs"]
    kwargs["use_cache"] = False
    for key in ("past_key_value", "past_key_values"):
        if key in kwargs:
            kwargs[key] = None
    return hidden, _map_tensors(kwargs, lambda t: t.to(device))


@dataclass
class BlockContext:
    """What a method gets for one block: the block on the compute device, its linears and its calibration inputs."""

    index: int
    block: nn.Module
    linears: dict[str, nn.Linear]
    inputs: torch.Tensor  # (N, T, H) calibration hidden states entering this block
    kwargs: dict
    device: torch.device
    micro_batch: int = 4
    groups: tuple = LINEAR_GROUPS
    log: dict = field(default_factory=dict)  # per-block figures a method wants in the report
    next_inputs: torch.Tensor | None = None  # set by a method whose last pass already gave the block's outputs
    wants_outputs: bool = True  # False for the last block of a walk whose result nobody reads: skip that pass
    patterns: dict = field(default_factory=dict)  # linear name -> pattern replacing the method's (a sparsity profile)
    runner: BlockRunner = field(default_factory=BlockRunner)  # eager, or compiled (`prune --compile`)
    _stages_ok: bool | None = field(default=None, repr=False)
    _taps_ok: bool | None = field(default=None, repr=False)
    _kwargs_by_dtype: dict = field(default_factory=dict, repr=False)

    @property
    def nsamples(self) -> int:
        return self.inputs.shape[0]

    def pattern_for(self, name: str, default):
        """The sparsity pattern of linear `name` in this block: a profile's allocation, else the method's own."""
        return self.patterns.get(name, default)

    def batches(self, samples: Sequence[int] | None = None, size: int | None = None) -> Iterator[torch.Tensor]:
        size = size or self.micro_batch
        if samples is None:  # slices: indexing a GPU tensor with a Python list syncs with the GPU every batch
            for s in range(0, self.nsamples, size):
                yield self.inputs[s : s + size].to(self.device, non_blocking=True)
            return
        idx = torch.as_tensor(list(samples), dtype=torch.long).to(self.inputs.device)  # one transfer
        for s in range(0, len(idx), size):
            yield self.inputs[idx[s : s + size]].to(self.device, non_blocking=True)

    def run(self, x: torch.Tensor, block: nn.Module | None = None, eager: bool = False) -> torch.Tensor:
        """The block's outputs for `x`, through the walk's runner; `eager`: always eagerly (checks of the block's
        structure, and forwards with hooks, which a compiled forward would trace into)."""
        dtype = self.dtype_of(block)
        runner = self.runner.eager if eager else self.runner
        return runner.block(block or self.block, x.to(dtype), self.kwargs_for(dtype))

    def kwargs_for(self, dtype: torch.dtype) -> dict:
        """The block's keyword arguments with floating tensors (rotary cos/sin, additive masks) in `dtype`, so a
        block copy in another dtype (a bf16 compute copy, a float32 master) computes in its own dtype."""
        if dtype not in self._kwargs_by_dtype:
            self._kwargs_by_dtype[dtype] = _map_tensors(
                self.kwargs, lambda t: t.to(dtype) if t.is_floating_point() else t)
        return self._kwargs_by_dtype[dtype]

    def dtype_of(self, block: nn.Module | None = None) -> torch.dtype:
        """The dtype `block` (default: this block) computes in: that of its parameters."""
        return next((block or self.block).parameters()).dtype

    def _stages_match(self, block: nn.Module, parts: BlockParts) -> bool:
        """Does ln1 -> attention -> residual -> ln2 -> MLP -> residual reproduce the block? Checked on one sample."""
        if self._stages_ok is None:
            x = self.inputs[:1].to(self.device).to(self.dtype_of(block))
            ref = self.run(x, block, eager=True).float()  # eager like staged_forward: a structural check
            staged = staged_forward(self, parts, x).float()
            self._stages_ok = bool((staged - ref).norm() <= 1e-3 * ref.norm())
        return self._stages_ok

    def taps_match(self, block: nn.Module, parts: BlockParts) -> bool:
        """Does tapping o_proj (down_proj) give what it reads: is attention (the MLP) that linear of the tapped
        call's result, exactly? Checked once, eagerly, on one sample (see block_runner)."""
        if self._taps_ok is None:
            eager, (o, down) = self.runner.eager, _tap_names(self.groups)
            o_proj, down_proj = block.get_submodule(self.groups[1][0]), block.get_submodule(self.groups[3][0])
            x = self.inputs[:1].to(self.device).to(self.dtype_of(block))
            n = parts.ln1(x)
            self._taps_ok = (
                getattr(parts.attn, o, None) is o_proj and getattr(parts.mlp, down, None) is down_proj
                and torch.equal(o_proj(eager.attention_input_of(parts.attn, o, n, self.kwargs_for(x.dtype))),
                                attention(self, parts, n))
                and torch.equal(down_proj(eager.mlp_input_of(parts.mlp, down, n)), parts.mlp(n)))
        return self._taps_ok

    @torch.no_grad()
    def outputs(self, samples: Sequence[int] | None = None, block: nn.Module | None = None,
                store: torch.device | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Block outputs for the given samples (all by default), stored on `store` (the inputs' device) in
        `dtype` (the inputs' dtype)."""
        store, dtype = store or self.inputs.device, dtype or self.inputs.dtype
        return torch.cat([self.run(x, block).to(store, dtype) for x in self.batches(samples)])

    @torch.no_grad()
    def collect(self, make_stat: Callable[[nn.Linear], Stat], names: Sequence[str],
                samples: Sequence[int] | None = None, block: nn.Module | None = None) -> dict[str, Stat]:
        """Feed the inputs of the named linears of `block` (default: this block), over the given samples, into
        fresh statistics.

        The forward pass stops after the last of the named linears, so statistics for early linears are cheap.
        """
        block = block or self.block
        parts = BlockParts.of(block) if self.runner.compile and set(names) == set(LINEAR_NAMES) else None
        if parts is not None and tuple(self.groups) == LINEAR_GROUPS and self.taps_match(block, parts):
            return dense_statistics(self, block, parts, make_stat, samples)  # traceable: no hooks, no raise
        # Linears of one group read the same input: one statistic object serves them all.
        shared = {n: next(m for m in group if m in names) for group in self.groups for n in group if n in names}
        hooked = [n for n in names if shared.get(n, n) == n]
        own = {n: make_stat(block.get_submodule(n)) for n in hooked}
        stats: dict[str, Stat] = {n: own[shared.get(n, n)] for n in names}
        last = max(hooked, key=list(self.linears).index)
        handles = []
        for name in hooked:
            def hook(module, args, name=name):
                own[name].add(args[0])
                if name == last:
                    raise _StopForward
            handles.append(block.get_submodule(name).register_forward_pre_hook(hook))
        try:
            for x in self.batches(samples):
                with contextlib.suppress(_StopForward):
                    self.run(x, block, eager=True)
        finally:
            for h in handles:
                h.remove()
        return stats

    @torch.no_grad()
    def prune_in_order(self, make_stat: Callable[[nn.Linear], Stat],
                       prune_group: Callable[[Sequence[str], dict[str, Stat]], None],
                       block: nn.Module | None = None, outputs: bool = False,
                       samples: Sequence[int] | None = None) -> torch.Tensor | None:
        """For each linear group in forward order: statistics of its input over the samples (default all),
        measured on `block` with the earlier groups already pruned, then `prune_group(names, stats)`. With
        `outputs`, also return the pruned block's outputs for those samples (stored like the inputs).

        A block that splits into checked stages (BlockParts) runs stage by stage over all samples, keeping one or
        two stages' activations: the whole sequence costs about 0.8 of a forward pass (1.0-1.45 with outputs),
        against 1.36 (2.36) for one partial forward per group, which is the fallback.
        """
        block = block or self.block
        parts = BlockParts.of(block)
        staged = parts is not None and tuple(self.groups) == LINEAR_GROUPS and self._stages_match(block, parts)
        self.log["staged_statistics"] = staged
        if staged:
            return prune_in_stages(self, block, parts, make_stat, prune_group, outputs, samples)
        for group in self.groups:
            prune_group(group, self.collect(make_stat, group, samples, block=block))
        return self.outputs(samples, block=block) if outputs else None

class PruningMethod(Protocol):
    name: str

    def hyperparameters(self) -> dict: ...

    def prune_block(self, ctx: BlockContext) -> None: ...

    # Optional: `prepare(model, input_ids, device, offload, store, micro_batch)` runs once on the dense model before
    # the walk (GBLM's full-model gradients, a sparsity profile's statistics); `reads_inputs = False` when its
    # prune_block reads no calibration inputs (magnitude), so the walk runs no forward pass.


def walk_blocks(
    model: nn.Module,
    input_ids: torch.Tensor,
    visit: Callable[[BlockContext], None],
    device: torch.device,
    offload: bool = True,
    store: torch.device | None = None,
    micro_batch: int = 4,
    desc: str = "blocks",
    weights: BlockWeights | None = None,
    last_outputs: bool = True,
    compile: bool | str | Callable = False,
    propagate: bool = True,
) -> torch.Tensor | None:
    """Capture block-0 inputs for `input_ids`, call `visit` on each block, propagate its outputs; return the last.

    offload: move each block back to the CPU after use (models larger than the accelerator prune on it).
    store: where calibration hidden states live (default: the compute device).
    weights: where each block's weights come from and go to (default: the model's memory, see ResidentWeights).
    A strategy with `prefetch(i, block)` is told the next block while the current one computes, and one with
    `flush()` is flushed at the end (ResidentWeights overlaps its copies with compute).
    last_outputs=False: the caller does not read the result, so the last block's output pass is skipped
    (returns None).
    compile: run the blocks' passes through torch.compile (block_runner; a named option: other rounding, so
    possibly other masks); True for inductor, or another torch.compile backend, by name or callable (tests).
    propagate=False: `visit` reads no calibration inputs (magnitude pruning), so no forward pass runs: nothing is
    captured, each context's inputs hold no samples, and no block computes outputs (returns None).
    """
    adapter = DecoderAdapter.from_model(model)
    store = torch.device(store) if store is not None else device
    if propagate:
        hidden, kwargs = capture_block_inputs(model, adapter, input_ids, device, store)
    else:  # every block sees the same empty inputs, and none computes outputs
        hidden, kwargs = None, {}
        no_inputs = torch.empty(0, input_ids.shape[1], model.config.hidden_size,
                                dtype=adapter.embed_tokens.weight.dtype, device=store)
    weights = weights or ResidentWeights(device, offload)
    blocks = adapter.blocks
    prefetch, flush = getattr(weights, "prefetch", None), getattr(weights, "flush", None)
    runner = BlockRunner(bool(compile), "inductor" if isinstance(compile, bool) else compile)
    try:
        for i, block in enumerate(tqdm(blocks, desc=desc, unit="block")):
            weights.fetch(i, block)
            if prefetch is not None and i + 1 < len(blocks):
                prefetch(i + 1, blocks[i + 1])
            inputs = hidden if propagate else no_inputs
            ctx = BlockContext(i, block, adapter.linears(block), inputs, kwargs, device, micro_batch,
                               wants_outputs=propagate and (last_outputs or i + 1 < len(blocks)), runner=runner)
            visit(ctx)
            if ctx.wants_outputs:
                hidden = ctx.next_inputs if ctx.next_inputs is not None else ctx.outputs()
            else:
                hidden = None
            weights.release(i, block)
    finally:
        if flush is not None:
            flush()
    return hidden


class BlockWeights(Protocol):
    """Where the walker gets a block's weights before visiting it, and where they go after: the model's own
    memory (ResidentWeights) or safetensors shards read and written block by block (stream.StreamedWeights)."""

    def fetch(self, i: int, block: nn.Module) -> None: ...

    def release(self, i: int, block: nn.Module) -> None: ...


class ResidentWeights:
    """The block lives in the model's memory: moved to the device for its visit (and back, with offload).

    With `overlap` (default) and a CUDA device, the next block's copy to the device and the last block's copy
    home run on a background thread and a side CUDA stream while the current block computes (OverlappedShuttle;
    the same bytes end up in the same places). `overlap_on_cpu` runs that path on a CPU device too (tests)."""

    def __init__(self, device: torch.device, offload: bool = True, overlap: bool = True,
                 overlap_on_cpu: bool = False):
        self.device, self.offload = torch.device(device), offload
        use_overlap = offload and overlap and (self.device.type == "cuda" or overlap_on_cpu)
        self.shuttle = OverlappedShuttle(self.device) if use_overlap else BlockShuttle(self.device)
        self.homes: dict[int, tuple] = {}

    def _shuttled(self, block: nn.Module) -> bool:
        home = module_device(block)
        return self.offload and home is not None and home.type == "cpu" and self.shuttle.pinned

    def fetch(self, i: int, block: nn.Module) -> None:
        home = module_device(block)
        shuttled = self._shuttled(block)
        self.shuttle.to_device(block) if shuttled else block.to(self.device)
        self.homes[i] = (home, shuttled)

    def prefetch(self, i: int, block: nn.Module) -> None:
        if isinstance(self.shuttle, OverlappedShuttle) and self._shuttled(block):
            self.shuttle.prefetch(block)

    def release(self, i: int, block: nn.Module) -> None:
        home, shuttled = self.homes.pop(i)
        if self.offload:
            self.shuttle.home(block) if shuttled else block.to(home)

    def flush(self) -> None:
        """Wait until every block sent home is in CPU memory (errors of a background copy surface here)."""
        if isinstance(self.shuttle, OverlappedShuttle):
            self.shuttle.flush()


def prune_model(model, input_ids, method: PruningMethod, device, offload=True, store=None, micro_batch=4,
                weights: BlockWeights | None = None, compile: bool | str | Callable = False) -> list[dict]:
    """Prune every block of `model` in place with `method`; return each block's log. `compile`: see walk_blocks."""
    logs: list[dict] = []
    prepare = getattr(method, "prepare", None)
    if prepare is not None:
        prepare(model, input_ids, device, offload=offload, store=store, micro_batch=micro_batch)

    def visit(ctx: BlockContext) -> None:
        method.prune_block(ctx)
        logs.append(ctx.log)

    walk_blocks(model, input_ids, visit, device, offload, store, micro_batch, desc=f"pruning ({method.name})",
                weights=weights, last_outputs=False, compile=compile,
                propagate=getattr(method, "reads_inputs", True))
    return logs
