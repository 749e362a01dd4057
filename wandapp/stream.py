"""Streaming a model through the walker block by block: models larger than CPU memory prune and evaluate.

The model is built as a skeleton whose decoder blocks hold no weights (the meta device); only the tensors outside
the blocks (embeddings, final norm, head) are read. The walker's weight strategy `StreamedWeights` reads each
block's tensors from the save_pretrained safetensors shards (or a GGUF file, dequantised tensor by tensor: see
stream_gguf.py) when it reaches that block, and after the block, writes it into the output's shards at once
(ShardWriter, with the index file from_pretrained expects) and frees it. Peak CPU memory: embeddings and head,
about two blocks, and the calibration activations.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .errors import WandappError
from .models import ModelSource, resolve_model
from .safetensors_read import SafetensorsFile

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


class Checkpoint:
    """The tensors of a save_pretrained folder (one model.safetensors or shards with an index), read one by one."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        index = self.folder / INDEX_NAME
        self._open: dict[Path, SafetensorsFile] = {}
        if index.is_file():
            self.files = {k: self.folder / f for k, f in json.loads(index.read_text())["weight_map"].items()}
        elif (self.folder / SINGLE_NAME).is_file():
            single = self._open[self.folder / SINGLE_NAME] = SafetensorsFile(self.folder / SINGLE_NAME)
            self.files = {k: single.path for k in single.keys()}
        else:
            raise WandappError(f"{self.folder}: no {SINGLE_NAME} or {INDEX_NAME}; streaming reads safetensors "
                               f"folders (convert other formats with `wandapp convert` first)")

    def keys(self) -> list[str]:
        return list(self.files)

    def get(self, key: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        if key not in self.files:
            raise WandappError(f"{self.folder}: checkpoint has no tensor {key!r}")
        path = self.files[key]
        if path not in self._open:  # the header only; a tensor is read when asked for (not mapped: see the module)
            self._open[path] = SafetensorsFile(path)
        t = self._open[path].read(key)  # read now (on the read-ahead thread), into memory of our own
        if dtype is not None and t.is_floating_point() and t.dtype != dtype:
            return t.to(dtype)
        return t

    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in set(self.files.values()))


def checkpoint_folder(spec: str | ModelSource) -> Path | None:
    """The local save_pretrained folder of a model argument, or None (hub ids, GGUF files)."""
    src = spec if isinstance(spec, ModelSource) else resolve_model(spec)
    return Path(src.path) if src.kind == "folder" else None


def should_stream(spec: str, dtype: torch.dtype, margin: float = 0.8) -> bool:
    """True when the model's weights in `dtype` would not fit in `margin` of the CPU memory available now."""
    import psutil

    src = resolve_model(spec)
    if src.kind == "gguf":
        from .stream_gguf import gguf_dense_bytes

        path, room = Path(src.path) / src.gguf_file, margin * psutil.virtual_memory().available
        # no GGUF type packs a weight in under 1.5 bits: a file that fits even so needs no header parse (seconds)
        if path.stat().st_size * 8 / 1.5 * torch.empty(0, dtype=dtype).element_size() <= room:
            return False
        return gguf_dense_bytes(path, dtype) > room
    folder = checkpoint_folder(src)
    if folder is None:
        return False
    try:
        ckpt = Checkpoint(folder)
    except WandappError:
        return False
    src_dtype = ckpt.get(ckpt.keys()[0]).dtype  # one small read: the stored precision
    need = ckpt.nbytes() * torch.empty(0, dtype=dtype).element_size() / torch.empty(0, dtype=src_dtype).element_size()
    return need > margin * psutil.virtual_memory().available


def skeleton(folder: str | os.PathLike, dtype: torch.dtype, ckpt: Checkpoint) -> nn.Module:
    """The model with empty (meta) decoder blocks and every other tensor read from `ckpt` in `dtype`."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(folder)
    except Exception as e:  # noqa: BLE001
        raise WandappError(f"cannot read the config of {folder}: {e}") from e
    return fill_outside_blocks(empty_model(config, dtype), dtype, ckpt, folder)


def empty_model(config, dtype: torch.dtype) -> nn.Module:
    """The causal LM of `config` with every weight on the meta device (nothing allocated)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights(include_buffers=False):  # buffers (rotary inv_freq) are computed, not stored
        return AutoModelForCausalLM.from_config(config, dtype=dtype)


def fill_outside_blocks(model: nn.Module, dtype: torch.dtype, ckpt, source) -> nn.Module:
    """Read every tensor outside the decoder blocks from `ckpt` (a Checkpoint or GgufCheckpoint) into `model`."""
    from .adapter import DecoderAdapter

    prefix = block_prefix(model, DecoderAdapter.from_model(model))
    outside = {k: ckpt.get(k, dtype) for k in ckpt.keys() if not k.startswith(prefix)}
    missing, _ = model.load_state_dict(outside, strict=False, assign=True)
    model.tie_weights()
    left = [k for k in missing if not k.startswith(prefix) and _is_meta(model, k)]
    if left:
        raise WandappError(f"{source}: checkpoint lacks {', '.join(left[:3])}")
    model.eval()
    model.config.use_cache = False
    return model


def _is_meta(model: nn.Module, key: str) -> bool:
    return model.get_parameter(key).is_meta if key in dict(model.named_parameters()) else False


def block_prefix(model: nn.Module, adapter) -> str:
    """'model.layers.': the state-dict prefix of the decoder blocks (block i's keys start with prefix + 'i.')."""
    return next(name for name, m in model.named_modules() if m is adapter.blocks) + "."


class ShardWriter:
    """Writes a save_pretrained weight set one shard at a time, then the index from_pretrained reads."""

    def __init__(self, folder: str | os.PathLike, nshards: int):
        self.folder, self.nshards = Path(folder), nshards
        self.weight_map: dict[str, str] = {}
        self.total = 0
        self.written = 0

    def write(self, tensors: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        self.written += 1
        name = f"model-{self.written:05d}-of-{self.nshards:05d}.safetensors"
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
        save_file(tensors, self.folder / name, metadata={"format": "pt"})
        self.weight_map.update(dict.fromkeys(tensors, name))
        self.total += sum(t.numel() * t.element_size() for t in tensors.values())

    def finish(self) -> None:
        if self.written != self.nshards:
            raise RuntimeError(f"wrote {self.written} shards, announced {self.nshards}")
        index = {"metadata": {"total_size": self.total}, "weight_map": dict(sorted(self.weight_map.items()))}
        (self.folder / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")


class StreamedWeights:
    """Walker weight strategy: block i's tensors come from `ckpt` when the walker reaches it and leave after it
    (into `sink` if given, with `on_done(i, block)` called first on the device), so at most the current block,
    the next one (read ahead) and the previous one (being written) are in memory at once.

    Reads of the next block and writes of the last run on one background thread while the device computes; on a
    CUDA device the copies go through BlockShuttle's pinned staging buffer, as in the in-memory path.
    """

    def __init__(self, ckpt: Checkpoint, prefix: str, device: torch.device, dtype: torch.dtype,
                 sink: ShardWriter | None = None, on_done: Callable[[int, nn.Module], None] | None = None,
                 nblocks: int | None = None):
        from concurrent.futures import ThreadPoolExecutor

        from .offload import BlockShuttle

        self.ckpt, self.prefix, self.device, self.dtype = ckpt, prefix, torch.device(device), dtype
        self.sink, self.on_done, self.nblocks = sink, on_done, nblocks
        self.shuttle = BlockShuttle(self.device)
        self.io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wandapp-stream")
        self.pending: dict = {}  # block index -> future of its CPU state dict (read ahead)
        self.writes: list = []

    def _read(self, i: int, names: list[str]) -> dict[str, torch.Tensor]:
        return {n: self.ckpt.get(f"{self.prefix}{i}.{n}", self.dtype) for n in names}

    def fetch(self, i: int, block: nn.Module) -> None:
        names = list(block.state_dict())
        future = self.pending.pop(i, None)
        state = future.result() if future is not None else self._read(i, names)
        if self.nblocks is None or i + 1 < self.nblocks:  # blocks share their tensor names
            self.pending[i + 1] = self.io.submit(self._read, i + 1, names)
        block.load_state_dict(state, assign=True)
        self.shuttle.to_device(block) if self.shuttle.pinned else block.to(self.device)

    def release(self, i: int, block: nn.Module) -> None:
        if self.on_done is not None:
            self.on_done(i, block)
        if self.sink is not None:
            self.shuttle.home(block) if self.shuttle.pinned else block.to("cpu")
            state = {f"{self.prefix}{i}.{n}": t for n, t in block.state_dict().items()}
            for w in self.writes:  # at most one write in flight: a third block never piles up
                w.result()
            self.writes = [self.io.submit(self.sink.write, state)]
        block.to("meta")

    def close(self) -> None:
        """Wait for the last write (its errors surface here); drop any read ahead."""
        for w in self.writes:
            w.result()
        self.writes = []
        self.pending.clear()
        self.io.shutdown(wait=True)


def write_outside_blocks(model: nn.Module, prefix: str, ckpt: Checkpoint, sink: ShardWriter) -> None:
    """The tensors outside the blocks that the source stores (tied copies stay tied: not written twice)."""
    state = model.state_dict()
    sink.write({k: state[k] for k in ckpt.keys() if not k.startswith(prefix)})


def save_config(model: nn.Module, folder: str | os.PathLike) -> None:
    """config.json (and generation_config.json) as save_pretrained writes them for this model."""
    model.config.use_cache = True
    model.config.dtype = str(model.dtype).split(".")[1]
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(folder)
    if model.can_generate():
        model.generation_config.save_pretrained(folder)


class StreamedModel:
    """A model argument opened for streaming: the skeleton, its checkpoint, and how to walk and write it."""

    def __init__(self, spec: str | ModelSource, dtype: torch.dtype):
        from .adapter import DecoderAdapter

        src = spec if isinstance(spec, ModelSource) else resolve_model(spec)
        self.dtype = dtype
        if src.kind == "gguf":  # dequantised one tensor at a time (wandapp.stream_gguf)
            from .gguf_once import gguf_parsed_once
            from .stream_gguf import GgufCheckpoint, gguf_config

            path = Path(src.path) / src.gguf_file
            with gguf_parsed_once():  # the config and the checkpoint read one parse of the file
                self.model = empty_model(gguf_config(path), dtype)
                self.ckpt = GgufCheckpoint(path, self.model)
            fill_outside_blocks(self.model, dtype, self.ckpt, path)
        elif src.kind == "folder":
            self.ckpt = Checkpoint(src.path)
            self.model = skeleton(src.path, dtype, self.ckpt)
        else:
            raise WandappError(f"--stream reads a local save_pretrained folder or GGUF file; {src.name} is neither "
                               f"(write a folder with `wandapp convert --model {src.name} --output DIR`)")
        self.prefix = block_prefix(self.model, DecoderAdapter.from_model(self.model))
        self.nblocks = len(DecoderAdapter.from_model(self.model).blocks)
        self.sink: ShardWriter | None = None

    def weights(self, device: torch.device, output: str | os.PathLike | None = None,
                on_done: Callable[[int, nn.Module], None] | None = None) -> StreamedWeights:
        """The walker strategy; with `output`, each visited block is written there (one shard per block)."""
        self.sink = ShardWriter(output, self.nblocks + 1) if output is not None else None
        self.streamer = StreamedWeights(self.ckpt, self.prefix, device, self.dtype, self.sink, on_done, self.nblocks)
        return self.streamer

    def finish(self, output: str | os.PathLike) -> None:
        """After the walk: the tensors outside the blocks, the index and the config files."""
        self.streamer.close()
        write_outside_blocks(self.model, self.prefix, self.ckpt, self.sink)
        self.sink.finish()
        save_config(self.model, output)
