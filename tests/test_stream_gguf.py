"""Streaming from a GGUF file (prune --stream, ppl --stream): tensors dequantised one at a time under transformers'
names give exactly what loading the whole GGUF with from_pretrained gives."""

import json

import numpy as np
import pytest
import torch
from test_stream import CPU, run_cli, tensors

from conftest import build_tiny_llama
from wandapp.data import save_calibration

gguf = pytest.importorskip("gguf")


def permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k row order (convert_hf_to_gguf.py LlamaModel.permute), which transformers undoes on load."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path, model, qtype) -> None:
    """A llama GGUF of `model` as llama.cpp writes one: linears and embeddings in `qtype` (F32: exact), norms F32,
    q/k rows permuted, the tokenizer copied from the embedded SmolLM2 GGUF (the tiny models use its vocabulary)."""
    from transformers.modeling_gguf_pytorch_utils import read_field

    from wandapp.models import embedded_gguf

    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(c.num_hidden_layers)
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)
    source = gguf.GGUFReader(embedded_gguf("smollm2"))
    for key, field in source.fields.items():
        if key.startswith("tokenizer."):
            value = read_field(source, key)
            array = field.types[0] == gguf.GGUFValueType.ARRAY
            w.add_key_value(key, value if array else value[0], field.types[0], field.types[1] if array else None)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, c.num_hidden_layers)
    for key, t in model.state_dict().items():
        if key == "lm_head.weight" and c.tie_word_embeddings:
            continue
        base, suffix = key.rsplit(".", 1)
        name, a = f"{names.get_name(base)}.{suffix}", t.float().numpy()
        if ".attn_q." in name or ".attn_k." in name:
            a = permute(a, c.num_attention_heads if ".attn_q." in name else c.num_key_value_heads)
        if a.ndim == 2 and qtype != gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, gguf.quantize(a, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, np.ascontiguousarray(a))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """A 3-block tiny Llama (untied head) as a Q4_1 GGUF (embeddings, head and linears quantised), and calibration."""
    root = tmp_path_factory.mktemp("stream_gguf")
    write_gguf(root / "tiny.Q4_1.gguf", build_tiny_llama(num_hidden_layers=3, tie_word_embeddings=False),
               gguf.GGMLQuantizationType.Q4_1)
    save_calibration(root / "calib.safetensors", torch.randint(0, 49152, (8, 32), generator=torch.Generator().manual_seed(0)),  # noqa: E501
                     {"source": "random"})
    return root


def test_gguf_tensors_come_back_under_their_hf_names(tmp_path):
    """An F32 GGUF dequantises to the very tensors it was written from: the names and q/k order are transformers'."""
    from wandapp.stream import StreamedModel

    model = build_tiny_llama(num_hidden_layers=2, tie_word_embeddings=True)
    write_gguf(tmp_path / "tiny.F32.gguf", model, gguf.GGMLQuantizationType.F32)
    streamed = StreamedModel(str(tmp_path / "tiny.F32.gguf"), torch.float32)
    state = model.state_dict()
    assert set(streamed.ckpt.keys()) == set(state) - {"lm_head.weight"}
    assert all(torch.equal(streamed.ckpt.get(k), state[k]) for k in streamed.ckpt.keys())
    # the skeleton holds the outside tensors (the head tied to the embeddings); the blocks stay on meta
    assert torch.equal(streamed.model.lm_head.weight, state["model.embed_tokens.weight"])
    assert all(p.is_meta for p in streamed.model.model.layers.parameters())


# float16: the in-memory GGUF load casts the weights only, so RoPE's inv_freq stays float32 on both paths
@pytest.mark.parametrize(("method", "sparsity", "dtype"), [("wanda", "2:4", "float32"), ("sparsegpt", "0.5", "float32"),
                                                           ("wanda++", "4:8", "float32"), ("wanda", "0.5", "float16")])
def test_streamed_gguf_prune_is_bitwise_the_in_memory_prune(tiny_gguf, tmp_path, method, sparsity, dtype):
    common = ["prune", "--model", tiny_gguf / "tiny.Q4_1.gguf", "--method", method, "--sparsity", sparsity,
              "--device", "cpu", "--dtype", dtype, "--calibration", tiny_gguf / "calib.safetensors"]
    if method == "wanda++":
        common += ["--ro-rounds", "2", "--ro-samples", "4"]
    assert run_cli(*common, "--no-stream", "--output", tmp_path / "memory") == 0
    assert run_cli(*common, "--stream", "--output", tmp_path / "stream") == 0
    memory, stream = tensors(tmp_path / "memory"), tensors(tmp_path / "stream")
    assert memory.keys() == stream.keys() and "lm_head.weight" in stream
    assert all(torch.equal(memory[k], stream[k]) and memory[k].dtype == stream[k].dtype for k in memory)
    index = json.loads((tmp_path / "stream/model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(stream) and len(set(index["weight_map"].values())) == 4
    a, b = (json.loads((tmp_path / d / "prune_report.json").read_text()) for d in ("memory", "stream"))
    assert b["stream"] and a["sparsity_per_layer"] == b["sparsity_per_layer"]
    # both load back with from_pretrained as the same model
    from transformers import AutoModelForCausalLM

    loaded = [AutoModelForCausalLM.from_pretrained(tmp_path / d) for d in ("memory", "stream")]
    assert loaded[0].config.to_diff_dict() == loaded[1].config.to_diff_dict()
    ids = torch.randint(0, 49152, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(loaded[0](ids).logits, loaded[1](ids).logits)


def test_streamed_gguf_perplexity_matches_the_in_memory_number(tiny_gguf, data_dir, tmp_path):
    common = ["ppl", "--model", tiny_gguf / "tiny.Q4_1.gguf", *CPU, "--seqlen", "64", "--max-windows", "4",
              "--data-dir", data_dir]
    assert run_cli(*common, "--no-stream", "--output", tmp_path / "memory.json") == 0
    assert run_cli(*common, "--stream", "--output", tmp_path / "stream.json") == 0
    memory, stream = (json.loads((tmp_path / f).read_text()) for f in ("memory.json", "stream.json"))
    assert stream["windows"] == memory["windows"] == 4 and stream["stream"]
    assert stream["ppl"] == pytest.approx(memory["ppl"], rel=1e-4)


def test_a_gguf_auto_streams_when_its_dequantised_weights_do_not_fit(tiny_gguf, monkeypatch):
    import psutil

    from wandapp.stream import should_stream

    path = str(tiny_gguf / "tiny.Q4_1.gguf")
    assert not should_stream(path, torch.float32)
    # 6.4 M parameters: 25.6 MB in float32, 12.8 MB in float16 (the Q4_1 file is about 4 MB); 80% of 20 MB is free
    small = psutil.virtual_memory()._replace(available=20e6)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: small)
    assert should_stream(path, torch.float32) and not should_stream(path, torch.float16)
