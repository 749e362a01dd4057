"""Methods on one real block of a tiny Llama, fed real text: sparsity, reconstruction error, RO behaviour."""

import copy

import pytest
import torch

from conftest import build_tiny_llama
from wandapp.adapter import DecoderAdapter
from wandapp.data import calibration_windows
from wandapp.errors import UnsupportedModelError, WandappError
from wandapp.evaluate.ppl import perplexity
from wandapp.masks import SparsityPattern, apply_mask, follows_nm
from wandapp.methods import build_method, presets_of
from wandapp.methods.stats import ColumnNorm
from wandapp.methods.wanda import wanda_score
from wandapp.walker import BlockContext, capture_block_inputs, prune_model

CPU = torch.device("cpu")
RO = dict(ro_lr=1e-3, ro_samples=8, ro_rounds=3)  # tiny random blocks need a larger step than LLaMA-7B's 3e-7


@pytest.fixture(scope="module")
def setup(data_dir, tokenizer):
    model = build_tiny_llama()
    ids = calibration_windows("c4", tokenizer, 16, 64, 0, data_dir)
    adapter = DecoderAdapter.from_model(model)
    hidden, kwargs = capture_block_inputs(model, adapter, ids, CPU, CPU)
    return model, adapter, ids, hidden, kwargs


def prune_first_block(setup, method, sparsity, **hyper):
    model, adapter, _, hidden, kwargs = setup
    dense = adapter.blocks[0]
    block = copy.deepcopy(dense)
    ctx = BlockContext(0, block, adapter.linears(block), hidden, kwargs, CPU)
    build_method(method, SparsityPattern.parse(sparsity), **hyper).prune_block(ctx)
    error = float((ctx.outputs() - ctx.outputs(block=dense)).float().square().sum())
    return ctx, error


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt", "wanda++-rgs", "wanda++-ro", "wanda++"])
@pytest.mark.parametrize("sparsity", ["0.5", "2:4", "4:8"])
def test_every_method_meets_the_pattern_exactly(setup, method, sparsity):
    hyper = dict(RO, ro_rounds=1) if method.startswith("wanda++") else {}
    ctx, _ = prune_first_block(setup, method, sparsity, **hyper)
    pattern = SparsityPattern.parse(sparsity)
    for name, lin in ctx.linears.items():
        zeros = lin.weight == 0
        rows, cols = zeros.shape
        if pattern.is_nm:  # exactly M - N zeros in every group of M, not "at most N non-zeros"
            per_group = zeros.reshape(rows, cols // pattern.m, pattern.m).sum(-1)
            assert (per_group == pattern.m - pattern.n).all(), name
        elif method == "sparsegpt":  # SparseGPT compares per 128-column block: exactly k of each block
            for c in range(0, cols, 128):
                block = zeros[:, c : c + 128]
                assert int(block.sum()) == int(block.numel() * 0.5), name
        else:  # exactly int(cols * ratio) zeros in every row
            assert (zeros.sum(1) == int(cols * 0.5)).all(), name


@pytest.mark.parametrize("sparsity", ["0.5", "2:4"])
def test_sparsegpt_and_wandapp_reconstruct_better_than_wanda(setup, sparsity):
    _, wanda = prune_first_block(setup, "wanda", sparsity)
    _, sparsegpt = prune_first_block(setup, "sparsegpt", sparsity)
    _, wandapp = prune_first_block(setup, "wanda++", sparsity, **RO)
    assert sparsegpt < wanda
    assert wandapp < wanda


def test_regional_optimisation_lowers_the_block_error_every_round(setup):
    ctx, final = prune_first_block(setup, "wanda++", "2:4", **RO, track_error=True)
    rounds = ctx.log["ro_rounds"]
    assert len(rounds) == RO["ro_rounds"]
    for r in rounds:
        assert r["error_ro"] < r["error_pruned"]
    # re-pruning after optimisation starts later rounds from a lower error than the first
    assert rounds[-1]["error_pruned"] < rounds[0]["error_pruned"]


def test_rgs_alpha_zero_is_sequential_wanda(setup):
    a, _ = prune_first_block(setup, "wanda++-rgs", "2:4", alpha=0.0)
    b, _ = prune_first_block(setup, "wanda", "2:4")
    same = {n: torch.equal(a.linears[n].weight == 0, b.linears[n].weight == 0) for n in a.linears}
    # q/k/v read the block input in both; later linears see the partly pruned block in Wanda++ only
    assert same["self_attn.q_proj"] and same["self_attn.k_proj"] and same["self_attn.v_proj"]
    assert not same["mlp.down_proj"]


def test_walker_propagates_and_layerwise_ppl_matches(setup):
    model, _, ids, _, _ = setup
    model = copy.deepcopy(model)
    tokens = ids.flatten()
    full = perplexity(model, tokens, 64, CPU, max_windows=4)["ppl"]
    layerwise = perplexity(model, tokens, 64, CPU, max_windows=4, layerwise=True)["ppl"]
    assert full == pytest.approx(layerwise, rel=1e-5)
    logs = prune_model(model, ids, build_method("wanda", SparsityPattern.parse("2:4")), CPU)
    assert len(logs) == 2 and perplexity(model, tokens, 64, CPU, max_windows=4)["ppl"] != full


def prune_in_order_with_wanda(setup, force_fallback=False, change_forward=False):
    """Sequential 2:4 Wanda on a copy of block 0 through BlockContext.prune_in_order; the norms each group saw."""
    _, adapter, _, hidden, kwargs = setup
    block = copy.deepcopy(adapter.blocks[0])
    if change_forward:  # a block whose forward is not ln1 -> attention -> ln2 -> MLP with residuals
        forward = block.forward
        block.forward = lambda *a, **k: forward(*a, **k) * 2
    ctx = BlockContext(0, block, adapter.linears(block), hidden, kwargs, CPU)
    if force_fallback:
        ctx._stages_ok = False
    norms = {}

    def prune_group(names, stats):
        for name in names:
            norms[name] = stats[name].norm().clone()
            w = ctx.linears[name].weight
            apply_mask(w.data, SparsityPattern.parse("2:4").mask(wanda_score(w, norms[name])))

    outputs = ctx.prune_in_order(ColumnNorm, prune_group, outputs=True)
    return ctx, norms, outputs


def test_staged_pass_equals_one_partial_forward_per_group(setup):
    staged, norms, outputs = prune_in_order_with_wanda(setup)
    assert staged._stages_ok  # the Llama block splits into checked stages
    fallback, ref_norms, ref_outputs = prune_in_order_with_wanda(setup, force_fallback=True)
    for name in ref_norms:
        torch.testing.assert_close(norms[name], ref_norms[name], rtol=1e-5, atol=1e-6)
        assert torch.equal(staged.linears[name].weight, fallback.linears[name].weight), name
    torch.testing.assert_close(outputs, ref_outputs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outputs, staged.outputs(), rtol=1e-5, atol=1e-5)


def test_block_with_another_forward_falls_back_to_per_group_passes(setup):
    ctx, norms, outputs = prune_in_order_with_wanda(setup, change_forward=True)
    assert ctx._stages_ok is False
    torch.testing.assert_close(outputs, ctx.outputs())


def test_unknown_method_and_hyperparameter():
    with pytest.raises(WandappError, match="unknown method"):
        build_method("obs", SparsityPattern.parse("0.5"))
    with pytest.raises(WandappError, match="no hyperparameter"):
        build_method("wanda", SparsityPattern.parse("0.5"), alpha=3.0)


def test_adapter_names_unsupported_family():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100))
    with pytest.raises(UnsupportedModelError, match="gpt2"):
        DecoderAdapter.from_model(model)


@pytest.mark.parametrize("family", ["mistral", "qwen2", "qwen3"])
def test_adapter_walks_other_llama_families(family):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(family, vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    ids = torch.randint(0, 128, (4, 16))
    prune_model(model, ids, build_method("wanda", SparsityPattern.parse("2:4")), CPU)
    for lin in DecoderAdapter.from_model(model).all_linears().values():
        assert follows_nm(lin.weight, 2, 4)


def test_loop_norms_over_the_round_samples(setup):
    ctx, error = prune_first_block(setup, "wanda++", "2:4", **RO, loop_norms="ro")
    assert all(follows_nm(lin.weight, 2, 4) for lin in ctx.linears.values())
    _, wanda = prune_first_block(setup, "wanda", "2:4")
    assert error < wanda
    with pytest.raises(WandappError, match="loop_norms"):
        build_method("wanda++", SparsityPattern.parse("2:4"), loop_norms="some")


def test_bf16_compute_copy_path(setup, monkeypatch):
    """The CUDA bf16 path (a bfloat16 copy computes, float32 masters take RMSprop's steps), forced on the CPU."""
    from wandapp.methods.wanda_plus_plus import WandaPlusPlus

    copies = []

    def compute_copy(self, ctx):
        copies.append(copy.deepcopy(ctx.block).to(torch.bfloat16).requires_grad_(False))
        return copies[-1]

    monkeypatch.setattr(WandaPlusPlus, "compute_copy", compute_copy)
    ctx, error = prune_first_block(setup, "wanda++", "2:4", **RO)
    assert copies and all(lin.weight.dtype == torch.float32 for lin in ctx.linears.values())
    assert all(follows_nm(lin.weight, 2, 4) for lin in ctx.linears.values())
    # the copy saw the masters' last values: RO moved the copy along with the masters
    master = ctx.linears["mlp.down_proj"].weight
    work = copies[-1].get_submodule("mlp.down_proj").weight
    assert (work.float() - master).abs().max() < 0.05 * master.abs().max()
    _, wanda = prune_first_block(setup, "wanda", "2:4")
    assert error < wanda


def test_hyperparameters_come_from_the_methods_fields(monkeypatch):
    """Flags, schema keys and range checks follow a method's dataclass fields; a new method slots in by declaring
    them (and sharing a name, such as alpha, with another method means one flag for both)."""
    import argparse
    from dataclasses import dataclass

    from wandapp import methods
    from wandapp.commands.prune import register
    from wandapp.methods.base import LayerwiseMethod, Method, hyperparameter
    from wandapp.methods.schema import entry_properties
    from wandapp.methods.wanda_plus_plus import WandaPlusPlus

    assert WandaPlusPlus.hyperparameters is Method.hyperparameters
    table = methods.hyperparameter_table()
    assert table["ro_lr"].type is float and table["x_norm"].rules["choices"] == ("l2", "per-sample", "rms")
    assert "seed" not in table and "rgs" not in table  # the run's seed and the variants' switches are not flags
    assert methods.hyperparameter_names("wanda++-rgs") == methods.hyperparameter_names("wanda++-ro")
    assert "ro" not in methods.hyperparameter_names("wanda++") and methods.hyperparameter_names("wanda") == []

    @dataclass
    class Toy(LayerwiseMethod):
        name = "toy"
        alpha: float = hyperparameter(0.5, "toy weight", minimum=0)
        steps: int = hyperparameter(3, "toy steps", minimum=1)

        def score(self, linear, stat):
            return linear.weight.abs()

    monkeypatch.setitem(methods.METHODS, "toy", (Toy, {}))
    sub = argparse.ArgumentParser().add_subparsers()
    register(sub)
    args = sub.choices["prune"].parse_args(["--model", "m", "--method", "toy", "--sparsity", "0.5", "--output", "o",
                                            "--steps", "7"])
    assert args.steps == 7 and args.alpha is None
    assert methods.hyperparameter_table()["alpha"].families == ("wanda++", "toy")
    assert entry_properties()["steps"] == {"type": "integer", "minimum": 1, "description": "toy: toy steps (default 3)"}
    assert "toy" in entry_properties()["method"]["enum"]
    toy = build_method("toy", SparsityPattern.parse("0.5"), seed=3, steps=2)
    assert toy.hyperparameters() == {"alpha": 0.5, "steps": 2}
    with pytest.raises(WandappError, match="steps must be >= 1; got 0"):
        build_method("toy", SparsityPattern.parse("0.5"), steps=0)
    with pytest.raises(WandappError, match="no preset 'tuned'"):
        build_method("toy", SparsityPattern.parse("0.5"), "tuned")


def test_presets_and_seed_reach_wandapp_only():
    pattern = SparsityPattern.parse("2:4")
    m = build_method("wanda++-ro", pattern, "tuned-long", seed=5, ro_rounds=2)
    assert (m.ro_lr, m.ro_samples, m.ro_rounds, m.seed, m.rgs, m.name) == (3e-4, 128, 2, 5, False, "wanda++-ro")
    assert build_method("sparsegpt", pattern, seed=5, percdamp=0.1).hyperparameters() == {"blocksize": 128,
                                                                                          "percdamp": 0.1}
    with pytest.raises(WandappError, match="percdamp must be > 0"):
        build_method("sparsegpt", pattern, percdamp=0.0)
    with pytest.raises(WandappError, match="^precision must be one of bf16, bf16-autocast, tf32, fp32; got 'fp64'$"):
        build_method("wanda++", pattern, precision="fp64")
    assert presets_of("wanda++-rgs") == ["paper", "tuned", "tuned-long"]
    assert presets_of("sparsegpt") == ["paper"]
    with pytest.raises(WandappError, match="^method wanda has no preset 'tuned'; choose one of paper$"):
        build_method("wanda", pattern, "tuned")


@pytest.mark.parametrize("precision, inside", [("tf32", True), ("fp32", False), ("bf16", False)])
def test_compute_precision_sets_tf32_only_inside_and_restores_it_after_an_error(precision, inside):
    from wandapp.methods.wanda_plus_plus import compute_precision

    before = torch.backends.cuda.matmul.allow_tf32
    with pytest.raises(RuntimeError, match="inside"):
        with compute_precision(torch.device("cuda"), precision):  # the flag is settable without a GPU
            assert torch.backends.cuda.matmul.allow_tf32 is (inside or before)
            raise RuntimeError("inside")
    assert torch.backends.cuda.matmul.allow_tf32 is before
