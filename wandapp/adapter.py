"""The one place that knows where a model family keeps its decoder blocks, embeddings, rotary and norm.

Found from the model's structure (a base model with `layers`, `embed_tokens`, `norm`, `rotary_emb`, and
blocks holding the seven Llama-style projections), never from names like "7b" or "30b".
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .errors import UnsupportedModelError

# Pruned linears of a Llama-family block, in forward order, grouped by the input they share.
LINEAR_GROUPS = (
    ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    ("self_attn.o_proj",),
    ("mlp.gate_proj", "mlp.up_proj"),
    ("mlp.down_proj",),
)
LINEAR_NAMES = tuple(name for group in LINEAR_GROUPS for name in group)
SUPPORTED_FAMILIES = "Llama, Mistral, Qwen2, Qwen3 (and other Llama-structured decoders such as SmolLM2)"


@dataclass
class DecoderAdapter:
    model: nn.Module
    base: nn.Module  # the decoder stack inside the *ForCausalLM wrapper

    @classmethod
    def from_model(cls, model: nn.Module) -> "DecoderAdapter":
        base = getattr(model, "model", None)
        family = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        missing = [a for a in ("layers", "embed_tokens", "norm") if base is None or not hasattr(base, a)]
        if missing or not isinstance(base.layers, nn.ModuleList) or len(base.layers) == 0:
            raise UnsupportedModelError(
                f"unsupported model family {family!r} ({type(model).__name__}): no Llama-style decoder stack "
                f"(missing {', '.join(missing) or 'layers'}); supported: {SUPPORTED_FAMILIES}"
            )
        adapter = cls(model, base)
        for name in LINEAR_NAMES:
            module = adapter.blocks[0].get_submodule(name) if _has(adapter.blocks[0], name) else None
            if not _is_linear(module):
                raise UnsupportedModelError(
                    f"unsupported model family {family!r} ({type(model).__name__}): decoder block has no "
                    f"linear {name}; supported: {SUPPORTED_FAMILIES}"
                )
        return adapter

    @property
    def blocks(self) -> nn.ModuleList:
        return self.base.layers

    @property
    def embed_tokens(self) -> nn.Module:
        return self.base.embed_tokens

    @property
    def norm(self) -> nn.Module:
        return self.base.norm

    @property
    def rotary_emb(self) -> nn.Module | None:
        return getattr(self.base, "rotary_emb", None)

    @property
    def lm_head(self) -> nn.Module:
        return self.model.get_output_embeddings()

    def linears(self, block: nn.Module) -> dict[str, nn.Linear]:
        """The prunable linears of one block, in forward order."""
        return {name: block.get_submodule(name) for name in LINEAR_NAMES}

    mlp_linear_names = tuple(n for n in LINEAR_NAMES if n.startswith("mlp."))

    def mlp(self, block: nn.Module) -> nn.Module:
        """The block's MLP: the module holding the mlp.* linears."""
        return block.get_submodule("mlp")

    def set_mlp(self, block: nn.Module, module: nn.Module) -> None:
        block.mlp = module

    def all_linears(self) -> dict[str, nn.Linear]:
        return {f"layers.{i}.{n}": lin for i, b in enumerate(self.blocks) for n, lin in self.linears(b).items()}


@dataclass
class BlockParts:
    """A pre-norm decoder block as its four stages: h = x + attn(ln1(x)); out = h + mlp(ln2(h)).

    Lets the walker run a block stage by stage over all calibration samples (see BlockContext.prune_in_order);
    the walker checks the staged forward against the block's own forward before trusting it."""

    ln1: nn.Module
    attn: nn.Module
    ln2: nn.Module
    mlp: nn.Module

    @classmethod
    def of(cls, block: nn.Module) -> "BlockParts | None":
        names = ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp")
        if all(isinstance(getattr(block, n, None), nn.Module) for n in names):
            return cls(*(getattr(block, n) for n in names))
        return None


def _is_linear(module) -> bool:
    """nn.Linear, or a drop-in for one holding its weight (such as the benchmark's SparseLinear)."""
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Module) and isinstance(
        getattr(module, "weight", None), nn.Parameter) and hasattr(module, "in_features"))


def _has(module: nn.Module, dotted: str) -> bool:
    try:
        module.get_submodule(dotted)
        return True
    except AttributeError:
        return False
