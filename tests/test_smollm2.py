"""The real embedded model end to end, at a tiny size: GGUF -> Wanda++ 2:4 -> save -> from_pretrained -> ppl."""

import json

import pytest
from transformers import AutoModelForCausalLM

from wandapp.cli import main
from wandapp.masks import follows_nm


@pytest.mark.slow
def test_smollm2_gguf_end_to_end(data_dir, tmp_path):
    out = tmp_path / "smollm2-wandapp-2-4"
    assert main(["prune", "--model", "smollm2", "--method", "wanda++", "--sparsity", "2:4", "--preset", "tuned",
                 "--nsamples", "2", "--seqlen", "64", "--ro-samples", "2", "--ro-rounds", "1", "--device", "cpu",
                 "--data-dir", str(data_dir), "--output", str(out)]) == 0
    report = json.loads((out / "prune_report.json").read_text())
    assert report["hyperparameters"]["ro_lr"] == 3e-4 and len(report["sparsity_per_layer"]) == 30 * 7
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 30
    assert all(follows_nm(m.weight, 2, 4) for b in model.model.layers for m in (b.self_attn.q_proj, b.mlp.down_proj))
    assert main(["ppl", "--model", str(out), "--seqlen", "128", "--max-windows", "2", "--device", "cpu",
                 "--data-dir", str(data_dir), "--output", str(tmp_path / "ppl.json")]) == 0
    ppl = json.loads((tmp_path / "ppl.json").read_text())["ppl"]
    assert 1 < ppl < 10_000  # a real model stays a language model after 2:4 pruning of 2 windows' worth
