import pytest
import torch

from wandapp.data import (
    c4_eval_documents,
    c4_train_documents,
    calibration_windows,
    eval_tokens,
    sample_document_windows,
    sample_stream_windows,
)
from wandapp.errors import DataError


def test_document_sampler_follows_wanda_protocol():
    # Documents of known token length; the protocol rejects documents of <= seqlen tokens.
    docs = ["a " * 3, "b " * 50, "c " * 9, "d " * 80]
    encode = lambda s: [ord(s[0])] * len(s.split())  # noqa: E731
    import random

    rng = random.Random(7)
    expected = []
    for _ in range(5):
        while True:
            i = rng.randint(0, len(docs) - 1)
            if len(encode(docs[i])) > 10:
                break
        j = rng.randint(0, len(encode(docs[i])) - 10 - 1)
        expected.append(encode(docs[i])[j : j + 10])
    got = sample_document_windows(docs, encode, 5, 10, seed=7)
    assert got.tolist() == expected


def test_c4_windows_are_stable_for_seed_0(data_dir, tokenizer):
    a = calibration_windows("c4", tokenizer, 4, 64, 0, data_dir)
    b = calibration_windows("c4", tokenizer, 4, 64, 0, data_dir)
    assert a.shape == (4, 64) and torch.equal(a, b)
    assert not torch.equal(a, calibration_windows("c4", tokenizer, 4, 64, 1, data_dir))
    # pinned: the first window of seed 0 on the shipped C4 sample (regression guard for the sampler)
    assert a[0, :8].tolist() == [351, 957, 1686, 28, 564, 585, 339, 761]
    assert a[:, 0].tolist() == [351, 1188, 198, 417]


def test_c4_heldout_is_disjoint_from_calibration(data_dir):
    train = c4_train_documents(data_dir)
    held, label = c4_eval_documents(data_dir)
    assert len(train) == 900 and len(held) == 100 and not set(train) & set(held)
    assert "held out" in label


def test_stream_sampler_and_errors():
    ids = torch.arange(100)
    w = sample_stream_windows(ids, 3, 10, 0)
    assert w.shape == (3, 10) and all((row[1:] - row[:-1] == 1).all() for row in w)
    with pytest.raises(DataError):
        sample_stream_windows(torch.arange(5), 1, 10, 0)


def test_wikitext_eval_text_joins_rows(data_dir, tokenizer):
    tokens, label = eval_tokens("wikitext2", tokenizer, data_dir, "test")
    assert tokens.numel() > 250_000 and "test" in label


@pytest.mark.parametrize("dataset,split", [("wikitext2", "test"), ("wikitext2", "validation"), ("c4", "test")])
def test_a_quick_run_tokenises_a_prefix_with_the_whole_texts_first_tokens(data_dir, tokenizer, dataset, split):
    whole, label = eval_tokens(dataset, tokenizer, data_dir, split)
    for count in (1, 1024, 4 * 2048, whole.numel() + 10):
        head, head_label = eval_tokens(dataset, tokenizer, data_dir, split, max_tokens=count)
        assert head_label == label and torch.equal(head, whole[:count]), count


def test_a_prefix_whose_cut_changes_its_tokens_falls_back_to_the_whole_text():
    from wandapp.data import leading_tokens

    # A tokenizer whose every token depends on the text's length: no prefix agrees with a longer one.
    def length_tokens(text):
        return {"input_ids": [len(text) % 7] * (len(text) // 4)}

    text = "x" * 100_000
    assert leading_tokens(length_tokens, text, 10) == length_tokens(text)["input_ids"][:10]


def test_missing_mirror_file_is_a_clear_error(tmp_path, tokenizer):
    (tmp_path / "wikitext2").mkdir()
    with pytest.raises(DataError, match="missing data file"):
        calibration_windows("c4", tokenizer, 1, 8, 0, tmp_path)
    with pytest.raises(DataError, match="no train split"):
        calibration_windows("wikitext2", tokenizer, 1, 8, 0, tmp_path)


def test_local_jsonl_and_text_calibration(tmp_path, tokenizer):
    jl = tmp_path / "docs.jsonl"
    jl.write_text('{"text": "' + "hello world " * 40 + '"}\n')
    assert calibration_windows(str(jl), tokenizer, 2, 16, 0, None).shape == (2, 16)
    txt = tmp_path / "t.txt"
    txt.write_text("some text " * 50)
    assert calibration_windows(str(txt), tokenizer, 2, 16, 0, None).shape == (2, 16)


def _token_docs(*lengths):
    """Documents whose 'tokens' are their own positions, tagged by document: doc d, token t -> 1000 * d + t."""
    docs = [str(d) + " " + str(n) for d, n in enumerate(lengths)]
    encode = lambda s: [1000 * int(s.split()[0]) + t for t in range(int(s.split()[1]))]  # noqa: E731
    return docs, encode


def test_c4_sampler_rejects_a_document_of_exactly_seqlen_tokens():
    """Wanda's protocol accepts only documents with MORE than seqlen tokens: one of exactly seqlen never appears;
    one of seqlen + 1 has the single start 0 (a start is drawn in [0, len - seqlen - 1])."""
    seqlen = 10
    docs, encode = _token_docs(seqlen, seqlen + 1)
    for seed in range(20):
        got = sample_document_windows(docs, encode, 6, seqlen, seed)
        assert (got == torch.arange(1000, 1000 + seqlen)).all(), seed  # document 1, tokens 0..9


def test_c4_sampler_window_never_holds_the_last_token():
    """For a document of seqlen + 2 tokens both starts 0 and 1 occur, and no window ends at the last token."""
    seqlen = 10
    docs, encode = _token_docs(seqlen + 2)
    starts = {int(w[0]) for seed in range(30) for w in sample_document_windows(docs, encode, 4, seqlen, seed)}
    assert starts == {0, 1}


def test_c4_sampler_with_no_document_longer_than_seqlen_is_an_error():
    docs, encode = _token_docs(8, 10, 10)
    with pytest.raises(DataError, match="longer than seqlen=10"):
        sample_document_windows(docs, encode, 1, 10, 0)
    with pytest.raises(DataError, match="no calibration documents"):
        sample_document_windows(["", ""], encode, 1, 10, 0)
