"""Streaming (prune --stream, ppl --stream): blocks read from and written to safetensors shards one at a time give
exactly what the in-memory path gives."""

import json

import pytest
import torch
from safetensors import safe_open

from conftest import build_tiny_llama
from wandapp.cli import main
from wandapp.data import save_calibration
from wandapp.methods import method_names

PATTERNS = ["2:4", "4:8", "0.5"]
CPU = ["--device", "cpu", "--dtype", "float32"]


def run_cli(*args):
    return main([str(a) for a in args])


def tensors(folder):
    """Every tensor of a save_pretrained folder, whichever way it is sharded."""
    out = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(path, framework="pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})
    return out


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, tokenizer):
    """A 3-block tiny Llama saved in shards of 100 kB (9 shards and an index), and cached calibration windows."""
    root = tmp_path_factory.mktemp("stream")
    model = build_tiny_llama(num_hidden_layers=3, tie_word_embeddings=False)
    model.save_pretrained(root / "src", max_shard_size="100KB")
    tokenizer.save_pretrained(root / "src")
    assert len(list((root / "src").glob("*.safetensors"))) > 3 and (root / "src/model.safetensors.index.json").is_file()
    ids = torch.randint(0, 49152, (8, 32), generator=torch.Generator().manual_seed(0))
    save_calibration(root / "calib.safetensors", ids, {"source": "random"})
    return root


@pytest.mark.parametrize("sparsity", PATTERNS)
# gblm needs the whole dense model for its gradients, so --stream refuses it (tests/test_bad_input.py)
@pytest.mark.parametrize("method", [m for m in method_names() if m != "gblm"])
def test_streamed_prune_is_bitwise_the_in_memory_prune(sharded, tmp_path, method, sparsity):
    common = ["prune", "--model", sharded / "src", "--method", method, "--sparsity", sparsity, *CPU,
              "--calibration", sharded / "calib.safetensors", "--ro-rounds", "2", "--ro-samples", "4"]
    if not method.startswith("wanda++"):
        common = common[:-4]
    assert run_cli(*common, "--no-stream", "--output", tmp_path / "memory") == 0
    assert run_cli(*common, "--stream", "--output", tmp_path / "stream") == 0
    memory, stream = tensors(tmp_path / "memory"), tensors(tmp_path / "stream")
    assert memory.keys() == stream.keys()
    assert all(torch.equal(memory[k], stream[k]) and memory[k].dtype == stream[k].dtype for k in memory)
    # one shard per block plus one for the rest, and the index from_pretrained follows
    index = json.loads((tmp_path / "stream/model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(stream) and len(set(index["weight_map"].values())) == 4
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "memory" / name).read_bytes() == (tmp_path / "stream" / name).read_bytes(), name
    a, b = (json.loads((tmp_path / d / "prune_report.json").read_text()) for d in ("memory", "stream"))
    assert b["stream"] and a["sparsity_per_layer"] == b["sparsity_per_layer"]
    assert a["sparsity_overall"] == b["sparsity_overall"]


def test_streamed_output_loads_with_from_pretrained(sharded, tmp_path):
    from transformers import AutoModelForCausalLM

    assert run_cli("prune", "--model", sharded / "src", "--method", "wanda", "--sparsity", "2:4", *CPU, "--stream",
                   "--calibration", sharded / "calib.safetensors", "--output", tmp_path / "out") == 0
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    saved = tensors(tmp_path / "out")["model.layers.2.mlp.up_proj.weight"]
    assert torch.equal(model.model.layers[2].mlp.up_proj.weight, saved)
    assert (model.model.layers[2].mlp.up_proj.weight == 0).float().mean() == 0.5


def test_tied_embeddings_stream_like_memory(tmp_path, tokenizer):
    build_tiny_llama(tie_word_embeddings=True).save_pretrained(tmp_path / "src", max_shard_size="100KB")
    tokenizer.save_pretrained(tmp_path / "src")
    save_calibration(tmp_path / "c.safetensors", torch.randint(0, 49152, (4, 16)), {"source": "random"})
    common = ["prune", "--model", tmp_path / "src", "--method", "sparsegpt", "--sparsity", "0.5", *CPU,
              "--calibration", tmp_path / "c.safetensors"]
    run_cli(*common, "--no-stream", "--output", tmp_path / "m")
    run_cli(*common, "--stream", "--output", tmp_path / "s")
    memory, stream = tensors(tmp_path / "m"), tensors(tmp_path / "s")
    assert "lm_head.weight" not in stream and memory.keys() == stream.keys()
    assert all(torch.equal(memory[k], stream[k]) for k in memory)


def test_streamed_perplexity_matches_the_in_memory_number(sharded, data_dir, tmp_path):
    common = ["ppl", "--model", sharded / "src", *CPU, "--seqlen", "64", "--max-windows", "6", "--batch-size", "2",
              "--data-dir", data_dir]
    assert run_cli(*common, "--output", tmp_path / "memory.json") == 0
    assert run_cli(*common, "--stream", "--output", tmp_path / "stream.json") == 0
    memory, stream = (json.loads((tmp_path / f).read_text()) for f in ("memory.json", "stream.json"))
    assert stream["windows"] == memory["windows"] == 6 and stream["stream"]
    assert stream["ppl"] == pytest.approx(memory["ppl"], rel=1e-4)


def test_stream_needs_a_local_folder_or_gguf(tmp_path, capsys):
    # a hub id streams only once written as a folder (GGUF files stream: tests/test_stream_gguf.py)
    assert run_cli("prune", "--model", "some-org/some-model", "--method", "wanda", "--sparsity", "0.5", *CPU,
                   "--stream", "--calibration", "c4", "--output", tmp_path / "o") == 2
    assert "save_pretrained folder or GGUF file" in capsys.readouterr().err


def test_auto_streams_only_what_does_not_fit(sharded, monkeypatch):
    import psutil

    from wandapp.stream import should_stream

    assert not should_stream(str(sharded / "src"), torch.float32)
    small = psutil.virtual_memory()._replace(available=1000)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: small)
    assert should_stream(str(sharded / "src"), torch.float32)
