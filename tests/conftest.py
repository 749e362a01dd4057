"""Shared fixtures: a tiny Llama built from a config with the real SmolLM2 tokenizer, and the local data mirror."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# Tests never reach the hub: fail fast instead of retrying a closed network.
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
DATA_DIR = Path(os.environ.get("WANDAPP_DATA_DIR", REPO.parent / "shared" / "data"))


def tiny_llama_config(**overrides):
    from transformers import LlamaConfig

    cfg = dict(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    cfg.update(overrides)
    return LlamaConfig(**cfg)


def build_tiny_llama(seed: int = 0, **overrides):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(**overrides)).eval()
    # Random init leaves tiny, nearly uniform weights; widen them so pruning choices matter.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2 and "embed" not in name:
                p.normal_(0, 0.2)
    return model


def in_ci() -> bool:
    """CI=true (GitHub Actions, GitLab and most runners set it): missing test inputs are failures there."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "wikitext2").is_dir():
        message = f"local data mirror not found at {DATA_DIR} (set WANDAPP_DATA_DIR)"
        if in_ci():  # in CI a missing mirror would silently skip ~40 tests: fail every one of them instead
            pytest.fail(f"CI: {message}", pytrace=False)
        pytest.skip(message)
    return DATA_DIR


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory) -> Path:
    """The real SmolLM2 tokenizer, extracted once from the embedded GGUF into a save_pretrained folder."""
    from wandapp.models import load_tokenizer

    out = tmp_path_factory.mktemp("smollm2_tokenizer")
    load_tokenizer("smollm2").save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tokenizer(smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tokenizer) -> Path:
    """A 2-block Llama (hidden 64) saved with the SmolLM2 tokenizer: a model folder any CLI command accepts."""
    out = tmp_path_factory.mktemp("tiny_llama")
    build_tiny_llama().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
