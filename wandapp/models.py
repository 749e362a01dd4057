"""Load causal LMs from a hub id, a `save_pretrained` folder, a GGUF file or the embedded default."""

from __future__ import annotations

import os

import torch

from .errors import WandappError
from .gguf_once import gguf_parsed_once
from .model_source import (  # noqa: F401  (re-exported: the loaders' callers name them here)
    EMBEDDED,
    PICKLE_GLOBS,
    ModelSource,
    check_weights,
    embedded_gguf,
    looks_like_hub_id,
    resolve_model,
)

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
    with gguf_parsed_once():  # config, weights and tokenizer would each parse a GGUF again
        try:
            model = AutoModelForCausalLM.from_pretrained(src.path, **kwargs)
        except Exception as e:  # noqa: BLE001
            hint = ("; if it holds only pickled weights, convert it once with `wandapp convert --allow-pickle`"
                    if src.kind == "hub" and not src.allow_pickle and "safetensors" in str(e) else "")
            raise WandappError(f"cannot load model from {src.name}: {_first_line(e)}{hint}") from e
        if src.gguf_file:  # GGUF dequantizes to float32 whatever dtype was asked: cast the weights, not the buffers
            for p in model.parameters():  # (RoPE's inv_freq stays float32, as from_pretrained keeps it for a folder)
                p.data = p.data.to(torch_dtype)
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
