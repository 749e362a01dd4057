"""`wandapp lora` on a tiny 2:4-pruned model: training loss falls, every pruned weight is still +0.0 after merge."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import build_tiny_llama
from wandapp.adapter import DecoderAdapter
from wandapp.cli import main
from wandapp.lora import LoraSettings, pruned_masks, reapply_masks, training_blocks
from wandapp.masks import apply_mask, follows_nm, nm_mask

ALL_LINEARS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))


@pytest.fixture(scope="module")
def pruned_dir(tmp_path_factory, tokenizer):
    model = build_tiny_llama(seed=1)
    with torch.no_grad():
        for lin in DecoderAdapter.from_model(model).all_linears().values():
            apply_mask(lin.weight, nm_mask(lin.weight.abs(), 2, 4))
    out = tmp_path_factory.mktemp("pruned_2of4")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def fixed_batch_loss(model, ids: torch.Tensor) -> float:
    with torch.no_grad():
        return float(model(input_ids=ids, labels=ids, use_cache=False).loss)


def test_lora_lowers_loss_and_keeps_every_pruned_zero(pruned_dir, data_dir, tmp_path, tokenizer, capsys):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    # A high learning rate and adapters on every linear, so a random tiny model learns something in a few steps.
    rc = main(["lora", "--model", str(pruned_dir), "--output", str(out), "--steps", "12", "--seqlen", "64",
               "--batch-size", "4", "--lr", "3e-2", "--warmup-steps", "0", "--targets", ALL_LINEARS, "--device", "cpu",
               "--eval-windows", "2", "--keep-adapter", "--data-dir", str(data_dir)])
    assert rc == 0
    report = json.loads((out / "lora_report.json").read_text())
    assert len(report["train_losses"]) == 12
    assert report["train_loss_last"] < report["train_loss_first"] - 0.03

    # The merged dense delta fills pruned weights; re-masking restores every one of them.
    assert report["sparsity"]["merged"] < report["sparsity"]["before"] - 0.1
    assert report["sparsity"]["remasked"] == report["sparsity"]["before"] == 0.5
    assert report["mask"]["pruned_weights_nonzero"] == 0
    assert report["mask"]["patterns_after"]["2:4"] and report["mask"]["patterns_before"]["2:4"]
    assert all(row["remasked"] == row["before"] for row in report["sparsity_by_linear"].values())
    assert all(report[k] > 0 for k in ("ppl_before", "ppl_adapter", "ppl_after"))

    # The saved folder loads with plain transformers: same zeros (+0.0, not -0.0), 2:4, and trained weights.
    pruned = AutoModelForCausalLM.from_pretrained(pruned_dir)
    tuned = AutoModelForCausalLM.from_pretrained(out)
    before, after = (DecoderAdapter.from_model(m).all_linears() for m in (pruned, tuned))
    for name, lin in after.items():
        zero = before[name].weight == 0
        assert torch.equal(lin.weight == 0, zero), name
        assert not torch.signbit(lin.weight[zero]).any(), name
        assert follows_nm(lin.weight, 2, 4), name
        assert not torch.equal(lin.weight, before[name].weight), name  # the adapter was merged in
    assert (out / "adapter" / "adapter_config.json").is_file()

    # Lower loss on C4 training text, measured on the saved (re-masked) model against the pruned one.
    ids = training_blocks(_docs(data_dir), tokenizer, 64, 4, seed=0)[0]
    assert fixed_batch_loss(tuned, ids) < fixed_batch_loss(pruned, ids)
    assert "pruned weights nonzero after re-mask: 0" in capsys.readouterr().out


def _docs(data_dir):
    from wandapp.data import c4_train_documents

    return c4_train_documents(data_dir)


def test_reapply_masks_writes_positive_zeros():
    model = build_tiny_llama(seed=2)
    lin = DecoderAdapter.from_model(model).all_linears()["layers.0.self_attn.q_proj"]
    with torch.no_grad():
        lin.weight[:, ::2] = 0.0
        masks = pruned_masks(model)
        lin.weight.fill_(-1.0)  # a merged delta that is negative everywhere
    reapply_masks(model, masks)
    assert torch.equal(lin.weight == 0, masks["layers.0.self_attn.q_proj"])
    assert not torch.signbit(lin.weight[:, ::2]).any()


def test_training_blocks_repeat_epochs_when_text_is_short(tokenizer):
    docs = ["one two three four five six seven eight nine ten " * 3] * 2
    blocks, info = training_blocks(docs, tokenizer, seqlen=8, count=50, seed=0)
    assert blocks.shape == (50, 8) and info["unique_blocks"] < 50 and info["epochs"] > 1


def test_bad_target_is_one_line_error(pruned_dir, data_dir, tmp_path, capsys):
    rc = main(["lora", "--model", str(pruned_dir), "--output", str(tmp_path / "o"), "--steps", "1", "--seqlen", "16",
               "--targets", "no_such_proj", "--device", "cpu", "--data-dir", str(data_dir)])
    assert rc == 2 and "no_such_proj" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert LoraSettings().targets == ("q_proj", "v_proj") and LoraSettings().rank == 8
