"""gguf_parsed_once: one parse of a GGUF file per load, the same model and tokenizer as without it."""

import os

import pytest
import torch
from test_stream_gguf import write_gguf

from conftest import build_tiny_llama
from wandapp.gguf_once import gguf_parsed_once

gguf = pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf_once") / "tiny.F32.gguf"
    write_gguf(path, build_tiny_llama(num_hidden_layers=2, tie_word_embeddings=False), gguf.GGMLQuantizationType.F32)
    return path


@pytest.fixture
def small_file(tmp_path):
    """A GGUF of one tensor and no vocabulary: quick to parse, for the scope's own rules."""
    import numpy as np

    path = tmp_path / "small.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.arange(12, dtype=np.float32).reshape(3, 4))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def parses(monkeypatch):
    """How many times a GGUF header was parsed (the original reader's __init__ ran)."""
    count = {"n": 0}
    original = gguf.GGUFReader.__init__

    def counting(self, *args, **kwargs):
        count["n"] += 1
        original(self, *args, **kwargs)

    monkeypatch.setattr(gguf.GGUFReader, "__init__", counting)
    return count


def hf_load(path):
    """transformers' own load of a GGUF, as models.load_model calls it (config, weights, tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from wandapp.models import _gguf_kwargs

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, **_gguf_kwargs())
    return model, AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def test_a_load_parses_the_file_once_and_loads_the_same_model(tiny_file, parses):
    plain_model, plain_tok = hf_load(tiny_file)
    assert parses["n"] >= 3  # config, weights, tokenizer: what the scope is for
    parses["n"] = 0
    with gguf_parsed_once():
        model, tok = hf_load(tiny_file)
        hf_load(tiny_file)  # a second load in the same scope parses nothing
    assert parses["n"] == 1
    a, b = plain_model.state_dict(), model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    text = "Pruning keeps the weights that matter."
    assert plain_tok(text)["input_ids"] == tok(text)["input_ids"] and plain_tok.get_vocab() == tok.get_vocab()


def test_load_model_uses_one_parse(tiny_file, parses):
    from wandapp.models import load_model

    load_model(str(tiny_file), "float32")
    assert parses["n"] == 1


def test_the_scope_restores_gguf_and_nests(small_file, parses):
    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with gguf_parsed_once():
        outer = gguf.GGUFReader
        with gguf_parsed_once():
            assert gguf.GGUFReader is outer  # joins the open scope
            first = gguf.GGUFReader(small_file)
        assert gguf.GGUFReader(small_file) is first
        arch = gguf.MODEL_ARCH.LLAMA
        assert gguf.get_tensor_name_map(arch, 2) is gguf.get_tensor_name_map(arch, 2)
    assert gguf.GGUFReader is reader and gguf.get_tensor_name_map is name_map
    assert parses["n"] == 1
    with gguf_parsed_once():  # a new scope parses afresh
        assert gguf.GGUFReader(small_file) is not first


def test_a_rewritten_file_or_a_writable_map_is_parsed_again(small_file, parses):
    copy = small_file
    with gguf_parsed_once():
        first = gguf.GGUFReader(copy)
        st = os.stat(copy)
        os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        assert gguf.GGUFReader(copy) is not first
        assert gguf.GGUFReader(copy, "c") is not gguf.GGUFReader(copy, "c")
    assert parses["n"] == 4


def test_a_corrupt_file_still_fails_inside_the_scope(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with gguf_parsed_once():
        for _ in range(2):  # the failed parse is not served from the memo the second time
            with pytest.raises(Exception):  # noqa: B017 - gguf's own error type
                gguf.GGUFReader(bad)
