"""The model adapter: which structures it accepts, and the exact one-line error for those it does not."""

import pytest
import torch
from torch import nn

from conftest import build_tiny_llama
from wandapp.adapter import SUPPORTED_FAMILIES, DecoderAdapter
from wandapp.errors import UnsupportedModelError


def tiny(**overrides):
    return build_tiny_llama(num_hidden_layers=1, **overrides)


def refused(model) -> str:
    with pytest.raises(UnsupportedModelError) as e:
        DecoderAdapter.from_model(model)
    return str(e.value)


def test_a_model_without_a_config_is_named_by_its_class():
    class Bare(nn.Module):
        pass

    assert refused(Bare()) == (f"unsupported model family 'Bare' (Bare): no Llama-style decoder stack (missing "
                               f"layers, embed_tokens, norm); supported: {SUPPORTED_FAMILIES}")


def test_each_missing_part_of_the_stack_is_named():
    model = tiny()
    del model.model.norm
    assert refused(model) == (f"unsupported model family 'llama' (LlamaForCausalLM): no Llama-style decoder stack "
                              f"(missing norm); supported: {SUPPORTED_FAMILIES}")


@pytest.mark.parametrize("layers", [nn.ModuleList(), "sequential"])
def test_layers_must_be_a_non_empty_module_list(layers):
    model = tiny()
    model.model.layers = nn.Sequential(*model.model.layers) if layers == "sequential" else layers
    assert "no Llama-style decoder stack (missing layers);" in refused(model)


def test_a_block_without_one_of_the_seven_linears_is_refused_by_name():
    model = tiny()
    del model.model.layers[0].mlp.gate_proj
    assert refused(model) == (f"unsupported model family 'llama' (LlamaForCausalLM): decoder block has no linear "
                              f"mlp.gate_proj; supported: {SUPPORTED_FAMILIES}")


class DropIn(nn.Module):
    """A stand-in for nn.Linear that holds its weight (as the benchmark's SparseLinear does)."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight, self.in_features = linear.weight, linear.in_features

    def forward(self, x):
        return x @ self.weight.T


class BufferWeight(DropIn):
    """in_features, but the weight is a buffer (a packed or quantised layer): nothing to prune."""

    def __init__(self, linear: nn.Linear):
        nn.Module.__init__(self)
        self.in_features = linear.in_features
        self.register_buffer("weight", linear.weight.detach().clone())


class NoInFeatures(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight = linear.weight


@pytest.mark.parametrize("kind, accepted", [(DropIn, True), (BufferWeight, False), (NoInFeatures, False),
                                            (nn.Identity, False)])
def test_a_linear_is_an_nn_linear_or_a_module_holding_its_weight(kind, accepted):
    model = tiny()
    mlp = model.model.layers[0].mlp
    mlp.up_proj = kind(mlp.up_proj) if kind is not nn.Identity else nn.Identity()
    if accepted:
        assert DecoderAdapter.from_model(model).linears(model.model.layers[0])["mlp.up_proj"] is mlp.up_proj
    else:
        assert "decoder block has no linear mlp.up_proj;" in refused(model)


def test_mlp_is_read_and_replaced_on_the_block():
    model = tiny()
    adapter = DecoderAdapter.from_model(model)
    block = adapter.blocks[0]
    assert adapter.mlp(block) is block.mlp
    other = nn.Identity()
    adapter.set_mlp(block, other)
    assert block.mlp is other and adapter.mlp(block) is other
    x = torch.zeros(1, 2, 64)
    assert torch.equal(block.mlp(x), x)
