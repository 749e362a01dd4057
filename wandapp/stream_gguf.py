"""Streaming from a GGUF file: its tensors dequantised one at a time, under the names transformers gives them.

GGUFReader maps the file and parses only the header, so opening a 70B GGUF costs no memory; `get` dequantises one
tensor (the gguf package's `dequantize`) and applies transformers' per-architecture fix-up (its TensorProcessor:
for llama, the reverse of llama.cpp's q/k row permutation), exactly as `from_pretrained(gguf_file=...)` does for the
whole file at once. The GGUF -> HF name map is transformers' own (`get_gguf_hf_weights_map` over the skeleton).

Covered: architectures whose GGUF tensors map one to one onto HF tensors (transformers' default processor and
those of llama/mistral, gemma2 and nemotron; qwen2, qwen3 and phi3 use the default). MoE processors, which split or
merge expert tensors across names, are refused.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .errors import WandappError

# transformers' TensorProcessors that turn one GGUF tensor into one HF tensor of the same name position
ONE_TO_ONE = ("TensorProcessor", "LlamaTensorProcessor", "Gemma2TensorProcessor", "NemotronTensorProcessor")


def gguf_config(path: str | os.PathLike):
    """The transformers config of a GGUF file (metadata only, no tensor read)."""
    from transformers import AutoConfig

    path = Path(path)
    try:
        return AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    except Exception as e:  # noqa: BLE001
        raise WandappError(f"cannot read the config of {path}: {e}") from e


class GgufCheckpoint:
    """The tensors of a GGUF file under their HF names, dequantised one by one (the interface of stream.Checkpoint).

    `model`: the (meta) skeleton built from the file's config; only its state-dict names are used."""

    def __init__(self, path: str | os.PathLike, model: nn.Module):
        try:
            from gguf import GGUFReader
            from transformers.modeling_gguf_pytorch_utils import (
                TENSOR_PROCESSORS,
                TensorProcessor,
                get_gguf_hf_weights_map,
                read_field,
            )
        except ImportError as e:
            raise WandappError(f"--stream from a GGUF needs the gguf package (pip install gguf): {e}") from None
        self.path = Path(path)
        try:
            self.reader = GGUFReader(self.path)  # a memory map; tensor data is read when dequantised
        except Exception as e:  # noqa: BLE001
            raise WandappError(f"cannot read {self.path} as GGUF: {e}") from e
        arch = read_field(self.reader, "general.architecture")[0]
        processor_class = TENSOR_PROCESSORS.get(arch)
        if processor_class is not None and processor_class.__name__ not in ONE_TO_ONE:
            raise WandappError(f"{self.path}: streaming a GGUF of architecture {arch!r} is not supported "
                               f"(its tensors do not map one to one); prune it without --stream")
        # the config keys the one-to-one processors read (llama: the head counts) as from_pretrained passes them
        self.processor = (processor_class or TensorProcessor)(config=model.config.to_dict())
        self.hf_names = get_gguf_hf_weights_map(model, self.processor)  # GGUF name -> HF name
        # the one-to-one processors keep the name; tensors the model has no place for are skipped, as there
        self.tensors = {self.hf_names[t.name]: t for t in self.reader.tensors if t.name in self.hf_names}

    def keys(self) -> list[str]:
        return list(self.tensors)

    def get(self, key: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        import numpy as np
        from gguf import dequantize

        if key not in self.tensors:
            raise WandappError(f"{self.path}: GGUF has no tensor for {key!r}")
        t = self.tensors[key]
        weights = dequantize(t.data, t.tensor_type)  # float32 (a view of the map for F32 tensors)
        weights = self.processor.process(weights=weights, name=t.name, tensor_key_mapping=self.hf_names,
                                         parsed_parameters={}).weights
        out = torch.from_numpy(np.copy(weights))
        return out.to(dtype) if dtype is not None and out.dtype != dtype else out

    def nbytes(self) -> int:
        return self.path.stat().st_size



def gguf_dense_bytes(path: str | os.PathLike, dtype: torch.dtype) -> int:
    """The bytes of every tensor of a GGUF once dequantised to `dtype` (header only). 0 without the gguf package or
    for an unreadable file: the load that follows reports that in full."""
    try:
        from gguf import GGUFReader

        tensors = GGUFReader(path).tensors
    except Exception:  # noqa: BLE001
        return 0
    size = torch.empty(0, dtype=dtype).element_size()
    return sum(int(t.n_elements) * size for t in tensors)
