"""A LLaMA-7B-shaped model with random 2:4 weights, built straight on the GPU (no 6.7B-parameter CPU init)."""

from __future__ import annotations

import torch

from ..adapter import DecoderAdapter
from .sparsity import random_2of4_


def llama7b_config(num_layers: int = 32):
    from transformers import LlamaConfig

    return LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=num_layers,
                       num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                       max_position_embeddings=4096, attn_implementation="sdpa")


@torch.no_grad()
def build_random_2of4_llama(device, dtype=torch.float16, num_layers: int = 32, seed: int = 0):
    from transformers import LlamaForCausalLM

    config = llama7b_config(num_layers)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(default)
    return prune_2of4_(model, seed)


@torch.no_grad()
def prune_2of4_(model, seed: int = 0):
    """Every prunable linear of the model given random 2:4 weights, in place."""
    linears = DecoderAdapter.from_model(model).all_linears().values()
    gen = torch.Generator(next(iter(linears)).weight.device).manual_seed(seed)
    for linear in linears:
        random_2of4_(linear.weight, gen)
    return model
