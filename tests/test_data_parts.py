"""wandapp.data piece by piece: exact messages, window boundaries, mirror layout, the hub calls (a fake `datasets`),
the prefix tokenisation's calls and the calibration file format. Written against mutation survivors of the module."""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import wandapp
from wandapp import data
from wandapp.errors import DataError

TRAIN = "c4-en-train.00000-of-01024.sample.jsonl"
VALIDATION = "c4-en-validation.00000-of-00008.sample.jsonl"


class CharTokenizer:
    """One token per character (its code point); records every call's text length and keyword arguments.
    With bos, add_special_tokens=True puts token 1 first, as a Llama tokenizer does."""

    def __init__(self, bos: bool = False, counted: str | None = None):
        self.bos, self.counted, self.calls = bos, counted, []

    def __call__(self, text, **kwargs):
        self.calls.append((len(text), kwargs))
        if len(self.calls) > 100:
            raise AssertionError("tokenised over 100 times: a prefix loop that does not end")
        ids = [ord(c) for c in text if self.counted is None or c == self.counted]
        return {"input_ids": ([1] if self.bos and kwargs.get("add_special_tokens") else []) + ids}


def codes(text: str) -> list[int]:
    return [ord(c) for c in text]


def write_jsonl(path: Path, docs, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def mirror(tmp_path):
    """A tiny mirror: WikiText-2 train/validation/test and a 103-document C4 train shard (no validation shard)."""
    root = tmp_path / "mirror"
    raw = root / "wikitext2" / "raw"
    raw.mkdir(parents=True)
    (raw / "train.txt").write_text(" = Train = \n \n" + "alpha beta gamma\n" * 3)
    (raw / "validation.txt").write_text(" \n = T = \n\n a b \n\t\n")
    (raw / "test.txt").write_text("x y\n\nz\n")
    write_jsonl(root / "c4" / TRAIN, [f"doc {i} " + "w" * (20 + i) for i in range(103)])
    return root


@pytest.fixture
def fake_hub(monkeypatch):
    """A fake `datasets` module: load_dataset records its arguments and returns {"text": rows}."""
    calls, rows = [], {"text": [f"row {i}" for i in range(1200)]}

    def load_dataset(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        return rows

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


# ---------------------------------------------------------------- data_root, files

def test_data_root_is_the_option_else_the_environment_else_none(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDAPP_DATA_DIR", raising=False)
    assert data.data_root() is None and data.data_root(None) is None and data.data_root("") is None
    env, opt = tmp_path / "env", tmp_path / "opt"
    env.mkdir()
    opt.mkdir()
    monkeypatch.setenv("WANDAPP_DATA_DIR", str(env))
    assert data.data_root() == env and data.data_root("") == env
    assert data.data_root(str(opt)) == opt and data.data_root(opt) == opt
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data.data_root("~/opt") == opt


def test_data_root_names_a_missing_folder_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DataError) as e:
        data.data_root("~/nope")
    assert str(e.value) == f"data folder not found: {tmp_path}/nope"
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("WANDAPP_DATA_DIR", str(tmp_path / "file"))
    with pytest.raises(DataError) as e:
        data.data_root()
    assert str(e.value) == f"data folder not found: {tmp_path}/file"


def test_read_jsonl_skips_blank_lines_but_counts_them(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text('{"text": "a", "n": 1}\n\n   \n[1, 2]\n"s"\n')
    assert data.read_jsonl(p) == [{"text": "a", "n": 1}, [1, 2], "s"]
    p.write_text('{"text": "a"}\n\n{"text": \n')
    with pytest.raises(DataError) as e:
        data.read_jsonl(p, "text")
    assert str(e.value) == f"{p}:3: not valid JSON (Expecting value)"


@pytest.mark.parametrize("row", ['[1, 2]', '"text"', '{"body": "a"}', '{"text": 5}', '{"text": null}'])
def test_read_jsonl_field_must_be_a_string_of_an_object(tmp_path, row):
    p = tmp_path / "r.jsonl"
    p.write_text('{"text": "a"}\n\n' + row + "\n")
    with pytest.raises(DataError) as e:
        data.read_jsonl(p, "text")
    assert str(e.value) == f"{p}:3: not an object with a string field 'text'"


def test_read_jsonl_of_a_field_and_of_a_gzip_file(tmp_path):
    docs = ["caf\u00e9", "b\nc", ""]
    assert data.read_jsonl(write_jsonl(tmp_path / "d.jsonl", docs), "text") == docs
    assert data.read_jsonl(write_jsonl(tmp_path / "d.jsonl.gz", docs, gz=True), "text") == docs
    with pytest.raises(DataError) as e:
        data.read_jsonl(tmp_path / "none.jsonl")
    assert str(e.value) == f"missing data file: {tmp_path / 'none.jsonl'}"


def test_read_text_reads_plain_and_gzip_utf8(tmp_path):
    text = "line one\n\u00e9t\u00e9 \u2014 two\n\nthree"
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    with gzip.open(tmp_path / "t.txt.gz", "wt", encoding="utf-8") as f:
        f.write(text)
    assert data.read_text(tmp_path / "t.txt") == text
    assert data.read_text(str(tmp_path / "t.txt.gz")) == text
    # a file named .gz only in its stem is plain text
    (tmp_path / "t.gz.txt").write_text(text, encoding="utf-8")
    assert data.read_text(tmp_path / "t.gz.txt") == text


def test_text_is_read_as_utf8_whatever_the_locale(tmp_path):
    """Under an ASCII locale (C, no coercion, no UTF-8 mode) the mirror still reads as UTF-8."""
    (tmp_path / "t.txt").write_text("caf\u00e9\n", encoding="utf-8")
    write_jsonl(tmp_path / "d.jsonl.gz", ["na\u00efve"], gz=True)
    assert data.read_text(tmp_path / "t.txt") == "caf\u00e9\n"  # the same calls in this process
    code = ("import sys, locale; from wandapp import data; assert locale.getpreferredencoding(False) != 'UTF-8';"
            "print(ascii(data.read_text(sys.argv[1])), ascii(data.read_jsonl(sys.argv[2], 'text')))")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0",
           "PYTHONPATH": str(Path(wandapp.__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "t.txt"), str(tmp_path / "d.jsonl.gz")],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "'caf\\xe9\\n' ['na\\xefve']"


def test_bytes_that_are_not_utf8_name_the_line_near_them(tmp_path):
    small = tmp_path / "s.txt"
    small.write_bytes(b"caf\xe9 \xff\xfe\n")
    with pytest.raises(DataError) as e:
        data.read_text(small)
    assert str(e.value) == f"{small}: not UTF-8 text (near line 1: invalid continuation byte)"
    # far into a file: the lines before the undecodable chunk were read; the message names the next one
    big = tmp_path / "b.jsonl"
    big.write_bytes(b'{"text": "a"}\n' * 3000 + b'{"text": "\xff"}\n')
    n = 0
    with open(big, encoding="utf-8") as f:
        with pytest.raises(UnicodeDecodeError):
            for n, _ in enumerate(f, 1):
                pass
    assert 1 < n < 3001
    with pytest.raises(DataError) as e:
        data.read_jsonl(big, "text")
    assert str(e.value) == f"{big}: not UTF-8 text (near line {n + 1}: invalid start byte)"


def test_a_corrupt_gzip_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(b"no gzip here\n")
    with pytest.raises(DataError) as e:
        data.read_jsonl(bad, "text")
    assert str(e.value) == f"cannot read {bad}: Not a gzipped file (b'no')"
    cut = tmp_path / "cut.txt.gz"
    cut.write_bytes(gzip.compress(b"some text\n" * 100)[:-12])
    with pytest.raises(DataError) as e:
        data.read_text(cut)
    assert str(e.value) == f"cannot read {cut}: Compressed file ended before the end-of-stream marker was reached"


# ---------------------------------------------------------------- WikiText-2

def test_wikitext_rows_keep_their_newline_and_blank_ones_are_empty(mirror):
    assert data.wikitext2_rows("validation", mirror) == ["", " = T = \n", "", " a b \n", ""]
    assert data.wikitext2_rows("test", mirror) == ["x y\n", "", "z\n"]
    assert data.wikitext2_eval_text("test", mirror) == "x y\n" + "\n\n" + "" + "\n\n" + "z\n"


def test_wikitext_rows_of_the_shared_mirror(data_dir):
    rows = data.wikitext2_rows("validation", data_dir)
    assert len(rows) == 3760 and rows[:3] == ["", " = Homarus gammarus = \n", ""]
    assert data.wikitext2_eval_text("validation", data_dir).startswith("\n\n = Homarus gammarus = \n\n\n\n\n Homarus")


def test_wikitext_split_errors(mirror, tmp_path):
    with pytest.raises(DataError) as e:
        data.wikitext2_rows("dev", mirror)
    assert str(e.value) == "unknown WikiText-2 split 'dev'"
    with pytest.raises(DataError) as e:
        data.wikitext2_rows("dev", None)
    assert str(e.value) == "unknown WikiText-2 split 'dev'"
    (tmp_path / "empty").mkdir()
    for split in ("validation", "test"):
        with pytest.raises(DataError) as e:
            data.wikitext2_rows(split, tmp_path / "empty")
        assert str(e.value) == f"missing data file: {tmp_path}/empty/wikitext2/raw/{split}.txt"
    with pytest.raises(DataError) as e:
        data.wikitext2_rows("train", tmp_path / "empty")
    assert str(e.value) == (f"missing data file: {tmp_path}/empty/wikitext2/raw/train.txt"
                            " (the shared mirror has no train split: calibrate on c4 or a local file)")


def test_wikitext_from_the_hub(fake_hub):
    assert data.wikitext2_rows("validation", None)[:2] == ["row 0", "row 1"]
    assert data.wikitext2_eval_text("test", None).startswith("row 0\n\nrow 1\n\nrow 2")
    assert fake_hub == [("Salesforce/wikitext", "wikitext-2-raw-v1", {"split": "validation"}),
                        ("Salesforce/wikitext", "wikitext-2-raw-v1", {"split": "test"})]


# ---------------------------------------------------------------- C4

def test_c4_mirror_without_validation_holds_out_its_last_100_documents(mirror):
    docs = data.read_jsonl(mirror / "c4" / TRAIN, "text")
    assert data.c4_train_documents(mirror) == docs[:3]
    held, label = data.c4_eval_documents(mirror)
    assert held == docs[3:]
    assert label == f"{TRAIN}, last 100 documents (held out from calibration; not the paper's C4 validation)"


def test_c4_mirror_with_a_validation_shard(mirror):
    write_jsonl(mirror / "c4" / VALIDATION, [f"v{i}" for i in range(1102)])
    assert len(data.c4_train_documents(mirror)) == 103  # nothing held out of the train sample
    held, label = data.c4_eval_documents(mirror)
    assert held == [f"v{i}" for i in range(1100)] and label == f"{VALIDATION}, first 1100 documents"


def test_c4_mirror_takes_the_first_matching_shard_and_labels_a_short_tail(tmp_path):
    write_jsonl(tmp_path / "c4" / "c4-en-train.00000-of-01024.b.jsonl.gz", ["b0", "b1"], gz=True)
    write_jsonl(tmp_path / "c4" / "c4-en-train.00000-of-01024.a.jsonl", ["a0", "a1", "a2"])
    write_jsonl(tmp_path / "c4" / "c4-en-train.00001-of-01024.jsonl", ["other shard"])
    assert data.c4_train_documents(tmp_path) == []  # 3 documents, all held out
    assert data.c4_eval_documents(tmp_path) == (
        ["a0", "a1", "a2"],
        "c4-en-train.00000-of-01024.a.jsonl, last 3 documents (held out from calibration; not the paper's C4 "
        "validation)")


def test_c4_mirror_errors(tmp_path):
    (tmp_path / "c4").mkdir()
    for fn in (data.c4_train_documents, data.c4_eval_documents):
        with pytest.raises(DataError) as e:
            fn(tmp_path)
        assert str(e.value) == f"missing data file: {tmp_path}/c4/c4-en-train.00000-of-01024*.jsonl*"
    write_jsonl(tmp_path / "c4" / VALIDATION, ["v"])  # a validation shard alone evaluates, does not calibrate
    assert data.c4_eval_documents(tmp_path) == (["v"], f"{VALIDATION}, first 1100 documents")
    with pytest.raises(DataError, match="missing data file"):
        data.c4_train_documents(tmp_path)


def test_c4_from_the_hub(fake_hub):
    assert data.c4_train_documents(None) == [f"row {i}" for i in range(1200)]
    assert data.c4_eval_documents(None) == ([f"row {i}" for i in range(1100)],
                                           "c4 validation shard 00000, first 1100 documents")
    assert fake_hub == [
        ("allenai/c4", None, {"data_files": {"train": "en/c4-train.00000-of-01024.json.gz"}, "split": "train"}),
        ("allenai/c4", None, {"data_files": {"validation": "en/c4-validation.00000-of-00008.json.gz"},
                              "split": "validation"})]


@pytest.mark.parametrize("missing", [False, True])
def test_an_unreachable_hub_is_one_line_naming_the_fix(monkeypatch, missing):
    error = ConnectionError("no network\nat all")

    def load_dataset(*args, **kwargs):
        raise error

    module = None if missing else types.SimpleNamespace(load_dataset=load_dataset)
    monkeypatch.setitem(sys.modules, "datasets", module)
    with pytest.raises(DataError) as e:
        data.c4_train_documents(None)
    kind = "ModuleNotFoundError" if missing else "ConnectionError"
    assert str(e.value) == (f"cannot load allenai/c4 from the Hugging Face hub ({kind}); pass --data-dir or set "
                            "WANDAPP_DATA_DIR to a local mirror")
    assert isinstance(e.value.__cause__, ImportError) if missing else e.value.__cause__ is error


# ---------------------------------------------------------------- samplers

class CountingRandom(random.Random):
    """random.Random that counts randint draws and stops a sampler that never gives up."""

    draws = 0

    def randint(self, a, b):
        CountingRandom.draws += 1
        if CountingRandom.draws > 50_000:
            raise AssertionError("the sampler does not give up")
        return super().randint(a, b)


def test_document_sampler_gives_up_after_100_draws_per_document_plus_10000(monkeypatch):
    monkeypatch.setattr(random, "Random", CountingRandom)
    monkeypatch.setattr(CountingRandom, "draws", 0)
    encoded = []
    docs = ["aaa", "bbbbb"]

    def encode(text):
        encoded.append(text)
        return [7] * len(text)

    with pytest.raises(DataError) as e:
        data.sample_document_windows(docs, encode, 3, 5, 0)
    assert str(e.value) == "no calibration document is longer than seqlen=5 tokens"
    assert CountingRandom.draws == 100 * 2 + 10_000 + 1
    assert sorted(encoded) == docs  # each document is tokenised once


def test_document_sampler_without_text_says_so():
    for docs in ([], ["", ""]):
        with pytest.raises(DataError) as e:
            data.sample_document_windows(docs, codes, 1, 4, 0)
        assert str(e.value) == "no calibration documents"


def test_document_sampler_output_is_int64_and_encodes_each_document_once():
    encoded = []

    def encode(text):
        encoded.append(text)
        return [1000 * int(text) + t for t in range(12)]

    docs = ["0", "1", "2"]
    got = data.sample_document_windows(docs, encode, 40, 10, 3)
    assert got.dtype == torch.long and got.shape == (40, 10)
    assert sorted(encoded) == docs
    rng = random.Random(3)
    expected = []
    for _ in range(40):
        i = rng.randint(0, 2)
        j = rng.randint(0, 1)
        expected.append(encode(docs[i])[j: j + 10])
    assert got.tolist() == expected


def test_document_sampler_never_gives_up_once_a_long_document_is_found():
    """The failed-draw count runs over all samples; past its limit a run that has found a long document goes on."""
    docs = ["long"] + ["short"] * 99  # limit 100 * 100 + 10000 = 20000 failed draws; ~99 per sample
    got = data.sample_document_windows(docs, lambda t: [len(t)] * (30 if t == "long" else 3), 400, 10, 0)
    assert got.shape == (400, 10) and (got == 4).all()


def test_document_sampler_skips_short_documents_between_long_ones():
    docs, lengths = ["s", "L"], {"s": 4, "L": 30}
    encode = lambda t: [ord(t)] * lengths[t]  # noqa: E731
    for seed in range(5):
        got = data.sample_document_windows(docs, encode, 8, 10, seed)
        assert (got == ord("L")).all()


def test_stream_sampler_draws_wandas_windows():
    ids = list(range(500, 537))
    for seed in (0, 5):
        rng = random.Random(seed)
        starts = [rng.randint(0, 37 - 10 - 1) for _ in range(6)]
        got = data.sample_stream_windows(ids, 6, 10, seed)
        assert got.dtype == torch.long and got.tolist() == [ids[j: j + 10] for j in starts]
    # a (1, n) int32 tensor is one stream; n = seqlen + 2 has the starts 0 and 1, never the last token alone
    stream = torch.arange(12, dtype=torch.int32).reshape(1, 12)
    windows = torch.cat([data.sample_stream_windows(stream, 4, 10, s) for s in range(10)])
    assert windows.dtype == torch.long and {int(w[0]) for w in windows} == {0, 1}


def test_stream_sampler_needs_seqlen_plus_2_tokens():
    with pytest.raises(DataError) as e:
        data.sample_stream_windows(torch.arange(11), 1, 10, 0)
    assert str(e.value) == "calibration text has 11 tokens, fewer than seqlen=10 + 2"
    assert data.sample_stream_windows(torch.arange(12), 1, 10, 0).shape == (1, 10)


def test_encoder_asks_for_special_tokens():
    assert data.encoder(CharTokenizer(bos=True))("ab") == [1, 97, 98]


# ---------------------------------------------------------------- calibration_windows

def test_calibration_sizes(mirror):
    tok = CharTokenizer()
    for nsamples, seqlen in ((0, 8), (1, 1), (-1, 8)):
        with pytest.raises(DataError) as e:
            data.calibration_windows("c4", tok, nsamples, seqlen, 0, mirror)
        assert str(e.value) == "nsamples must be >= 1 and seqlen >= 2"
    assert data.calibration_windows("c4", tok, 1, 2, 0, mirror).shape == (1, 2)


def test_c4_calibration_samples_the_mirrors_train_documents(mirror):
    tok = CharTokenizer(bos=True)
    got = data.calibration_windows("c4", tok, 5, 16, 4, mirror)
    docs = data.read_jsonl(mirror / "c4" / TRAIN, "text")[:3]
    assert torch.equal(got, data.sample_document_windows(docs, lambda t: [1] + codes(t), 5, 16, 4))
    assert all(kw == {"add_special_tokens": True} for _, kw in tok.calls)


def test_wikitext_calibration_joins_the_train_rows_with_spaces(mirror):
    tok = CharTokenizer(bos=True)
    got = data.calibration_windows("wikitext2", tok, 6, 8, 2, mirror)
    text = " = Train = \n " + " alpha beta gamma\n" * 3  # rows " = Train = \n", "", then 3 rows, joined by " "
    assert torch.equal(got, data.sample_stream_windows([1] + codes(text), 6, 8, 2))
    assert tok.calls == [(len(text), {"add_special_tokens": True})]


def test_file_calibration_documents_or_one_stream(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    tok = CharTokenizer()
    docs = ["a" * 12, "b" * 30]
    for name, gz in (("d.jsonl", False), ("d.jsonl.gz", True)):
        write_jsonl(tmp_path / name, docs, gz=gz)
        got = data.calibration_windows(f"~/{name}", tok, 8, 10, 1, None)
        assert torch.equal(got, data.sample_document_windows(docs, codes, 8, 10, 1))
    (tmp_path / "d.json").write_text("\n".join(docs))  # not .jsonl: one text stream, windows may span both
    got = data.calibration_windows("~/d.json", tok, 8, 10, 1, None)
    assert torch.equal(got, data.sample_stream_windows(codes("\n".join(docs)), 8, 10, 1))


def test_unknown_calibration_source(tmp_path):
    for source in ("c5", str(tmp_path)):
        with pytest.raises(DataError) as e:
            data.calibration_windows(source, CharTokenizer(), 1, 8, 0, None)
        assert str(e.value) == f"unknown calibration source {source!r}: not c4, wikitext2 or an existing file"


def test_calibration_file_text(tmp_path):
    assert data.calibration_file_text(write_jsonl(tmp_path / "a.jsonl", ["", "x"])) == ["", "x"]
    assert data.calibration_file_text(write_jsonl(tmp_path / "a.jsonl.gz", ["y"], gz=True)) == ["y"]
    (tmp_path / "a.txt").write_text('{"text": "z"}\n')
    assert data.calibration_file_text(tmp_path / "a.txt") == '{"text": "z"}\n'
    (tmp_path / "e.txt").write_text(" \n\t\n")
    for p in (write_jsonl(tmp_path / "e.jsonl", [" ", "\n"]), tmp_path / "e.txt"):
        with pytest.raises(DataError) as e:
            data.calibration_file_text(p)
        assert str(e.value) == f"calibration file {p} holds no text"


# ---------------------------------------------------------------- eval_tokens, leading_tokens

def test_eval_tokens_tokenise_the_joined_text(mirror):
    tok = CharTokenizer(bos=True)
    ids, label = data.eval_tokens("wikitext2", tok, mirror)
    assert ids.dtype == torch.long and ids.tolist() == codes("x y\n\n\n\n\nz\n") and label == "wikitext-2-raw-v1 test"
    ids, label = data.eval_tokens("wikitext2", tok, mirror, "validation", max_tokens=5)
    assert ids.tolist() == codes("\n\n = ") and label == "wikitext-2-raw-v1 validation"
    held, c4_label = data.c4_eval_documents(mirror)
    ids, label = data.eval_tokens("c4", tok, mirror)
    assert ids.dtype == torch.long and ids.tolist() == codes(" ".join(held)) and label == c4_label
    assert all(kw == {} for _, kw in tok.calls)  # perplexity text: no special tokens asked for
    with pytest.raises(DataError) as e:
        data.eval_tokens("ptb", tok, mirror)
    assert str(e.value) == "unknown evaluation dataset 'ptb'; choose wikitext2 or c4"


def test_an_empty_evaluation_text_is_an_empty_int64_stream(mirror):
    (mirror / "wikitext2" / "raw" / "test.txt").write_text("")
    ids, label = data.eval_tokens("wikitext2", CharTokenizer(), mirror)
    assert ids.dtype == torch.long and ids.shape == (0,) and label == "wikitext-2-raw-v1 test"


def test_leading_tokens_checks_a_4096_character_prefix_against_twice_it():
    tok, text = CharTokenizer(), "".join(chr(65 + i % 50) for i in range(100_000))
    assert data.leading_tokens(tok, text, 10) == codes(text[:10])
    assert [n for n, _ in tok.calls] == [4096, 8192]
    tok.calls.clear()
    assert data.leading_tokens(tok, text, 1000) == codes(text[:1000])  # 8 characters per token wanted
    assert [n for n, _ in tok.calls] == [8000, 16000]


def test_leading_tokens_of_a_short_text_tokenise_it_whole():
    for length in (8192, 8000):  # the loop needs a text longer than twice the prefix
        tok = CharTokenizer()
        assert data.leading_tokens(tok, "q" * length, 5) == [ord("q")] * 5
        assert [n for n, _ in tok.calls] == [length]
    tok = CharTokenizer()
    assert data.leading_tokens(tok, "q" * 8193, 5) == [ord("q")] * 5
    assert [n for n, _ in tok.calls] == [4096, 8192]


def test_leading_tokens_needs_256_tokens_past_the_count():
    # only "a" is a token: the first 4096 characters hold exactly count + 256 of them (accepted), or one fewer
    for extra, calls in ((0, [4096, 8192]), (-1, [4096, 8192, 16384])):
        text = ("a" * (266 + extra)).ljust(4096, ".") + "a" * 30_000
        tok = CharTokenizer(counted="a")
        assert data.leading_tokens(tok, text, 10) == [97] * 10
        assert [n for n, _ in tok.calls] == calls, extra


def test_leading_tokens_doubles_the_prefix_until_it_holds_enough():
    text = "." * 10_000 + "a" * 40_000  # no token in the first 8192 characters
    tok = CharTokenizer(counted="a")
    assert data.leading_tokens(tok, text, 3) == [97] * 3
    assert [n for n, _ in tok.calls] == [4096, 8192, 16384, 32768]


# ---------------------------------------------------------------- calibration files

def test_calibration_file_round_trip_and_format(tmp_path):
    from safetensors import safe_open

    ids = torch.arange(24).reshape(4, 6).t()  # not contiguous
    path = tmp_path / "c.safetensors"
    data.save_calibration(path, ids, {"nsamples": 6, "source": "c4"})
    assert os.listdir(tmp_path) == ["c.safetensors"]
    with safe_open(str(path), "pt") as f:
        assert list(f.keys()) == ["input_ids"] and f.metadata() == {"nsamples": "6", "source": "c4"}
        assert torch.equal(f.get_tensor("input_ids"), ids)
    got, meta = data.load_calibration(str(path))
    assert torch.equal(got, ids) and got.dtype == torch.long and meta == {"nsamples": "6", "source": "c4"}


def test_a_calibration_file_without_metadata_loads_with_empty_metadata(tmp_path):
    from safetensors.torch import save_file

    save_file({"input_ids": torch.ones(2, 3, dtype=torch.long)}, str(tmp_path / "c.safetensors"))
    ids, meta = data.load_calibration(tmp_path / "c.safetensors")
    assert ids.tolist() == [[1, 1, 1], [1, 1, 1]] and meta == {}


def calibration_error(path) -> str:
    """The one-line DataError that loading `path` as a calibration file raises."""
    with pytest.raises(DataError) as e:
        data.load_calibration(path)
    return str(e.value)


def test_calibration_file_errors(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    p = tmp_path / "c.safetensors"
    assert calibration_error(p) == f"missing calibration file: {p}"
    p.write_bytes(b"garbage")
    with pytest.raises(Exception) as raw:
        safe_open(str(p), "pt")
    assert calibration_error(p) == f"cannot read calibration file {p}: {str(raw.value).strip().splitlines()[0]}"
    save_file({"ids": torch.ones(2, 3, dtype=torch.long)}, str(p))
    message = calibration_error(p)
    assert message.startswith(f"cannot read calibration file {p}: ") and "\n" not in message
    for bad in (torch.ones(6, dtype=torch.long), torch.ones(2, 3, dtype=torch.int32), torch.ones(1, 2, 3).long()):
        save_file({"input_ids": bad}, str(p))
        assert calibration_error(p) == f"{p}: input_ids must be a 2-D int64 tensor"
    save_file({"input_ids": torch.zeros(0, 8, dtype=torch.long)}, str(p))
    assert calibration_error(p) == f"{p}: holds 0 calibration windows"
    save_file({"input_ids": torch.tensor([[0, 5], [-1, 2**40]])}, str(p))
    assert calibration_error(p) == f"{p}: token id -1 is negative"


def test_token_ids_must_be_below_the_vocabulary():
    data.check_token_ids(torch.tensor([[0, 9], [3, 4]]), 10, "s")  # 0 and vocab - 1 are valid
    data.check_token_ids(torch.tensor([[0, 10**12]]), None, "s")  # no vocabulary size: no upper bound
    with pytest.raises(DataError) as e:
        data.check_token_ids(torch.tensor([[0, 12], [11, 10]]), 10, "src")
    assert str(e.value) == "src: token id 12 is not below the model's vocabulary size 10"
    with pytest.raises(DataError) as e:
        data.check_token_ids(torch.tensor([[0, 10]]), 10, "src")
    assert str(e.value) == "src: token id 10 is not below the model's vocabulary size 10"
    with pytest.raises(DataError) as e:
        data.check_token_ids(torch.tensor([[-1, 12], [-3, 0]]), 10, Path("p"))
    assert str(e.value) == "p: token id -3 is negative"


def test_one_line_is_the_first_line_else_the_type():
    assert data._one_line(ValueError("  first\nsecond  ")) == "first"
    assert data._one_line(ValueError("\n \n")) == "ValueError"
    assert data._one_line(KeyError()) == "KeyError"
