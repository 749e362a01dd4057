"""The real embedded model end to end, at a tiny size: GGUF -> Wanda++ 2:4 -> save -> from_pretrained -> ppl."""

import json

import pytest
from transformers import AutoModelForCausalLM

from wandapp.cli import main
from wandapp.masks import follows_nm

# Dense SmolLM2-135M (embedded GGUF, float32, CPU) on WikiText-2 test, 2 windows of 128 tokens: measured once with
# `wandapp ppl --model smollm2 --seqlen 128 --max-windows 2 --device cpu --data-dir ../shared/data` (torch 2.13.0
# CPU). float32 on the CPU repeats it to ~1e-5 (only BLAS summation order varies); rel 1e-3 leaves room for other
# BLAS builds, while a changed window, text, BOS handling or loss shift moves it by far more.
DENSE_PPL_128x2 = 46.28663100952588


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
    ppl = {}
    for name, model_arg in (("dense", "smollm2"), ("pruned", str(out))):
        assert main(["ppl", "--model", model_arg, "--seqlen", "128", "--max-windows", "2", "--device", "cpu",
                     "--data-dir", str(data_dir), "--output", str(tmp_path / f"{name}.json")]) == 0
        ppl[name] = json.loads((tmp_path / f"{name}.json").read_text())["ppl"]
    assert ppl["dense"] == pytest.approx(DENSE_PPL_128x2, rel=1e-3)
    assert ppl["dense"] < ppl["pruned"] < 10_000  # 2:4 costs quality; the pruned model stays a language model
