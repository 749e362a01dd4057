"""Calibration and evaluation data, from a local mirror laid out like ../shared/data, else the Hugging Face hub.

Mirror layout (any folder; `--data-dir` or the WANDAPP_DATA_DIR environment variable):
    wikitext2/raw/{train,validation,test}.txt      wiki.*.raw of wikitext-2-raw-v1
    c4/c4-en-train.00000-of-01024*.jsonl[.gz]      documents of C4 `en` train shard 00000 (field "text")
    tasks/<task>/<split>.jsonl[.gz]                lm-eval task data

Held-out C4 evaluation: the hub path uses the standard c4-validation.00000-of-00008 shard (first 1100 documents,
as SparseGPT does). A mirror without the validation shard holds out its LAST 100 train documents instead
(documents 900-999 of the shipped 1000-document sample); C4 calibration from such a mirror then draws only from the
documents before them, so the evaluation text is never calibration text. Results are labelled accordingly.
"""

from __future__ import annotations

import gzip
import json
import os
import random
from pathlib import Path
from typing import Callable, Sequence

import torch

from .errors import DataError

ENV_VAR = "WANDAPP_DATA_DIR"
C4_TRAIN_GLOB = "c4-en-train.00000-of-01024*.jsonl*"
C4_VALIDATION_GLOB = "c4-en-validation.00000-of-00008*.jsonl*"
C4_HOLDOUT_DOCS = 100
C4_VALIDATION_DOCS = 1100  # SparseGPT's C4 perplexity set: the first 1100 validation documents
C4_HUB_TRAIN = "en/c4-train.00000-of-01024.json.gz"
C4_HUB_VALIDATION = "en/c4-validation.00000-of-00008.json.gz"


def data_root(option: str | os.PathLike | None = None) -> Path | None:
    """The local mirror: the option, else $WANDAPP_DATA_DIR, else None (use the hub)."""
    value = option or os.environ.get(ENV_VAR)
    if not value:
        return None
    root = Path(value).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder not found: {root}")
    return root


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def read_jsonl(path: str | os.PathLike, field: str | None = None) -> list:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing data file: {path}")
    rows = []
    with _open_text(path) as f:
        for n, line in enumerate(_lines(f, path), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
                if field is not None:
                    if not isinstance(row, dict) or not isinstance(row.get(field), str):
                        raise DataError(f"{path}:{n}: not an object with a string field {field!r}")
                    row = row[field]
                rows.append(row)
    return rows


def _lines(f, path: Path):
    """The lines of an open text file; bytes that are not UTF-8 are a one-line DataError, not a traceback."""
    n = 0
    try:
        for n, line in enumerate(f, 1):
            yield line
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (near line {n + 1}: {e.reason})") from None
    except (OSError, EOFError) as e:  # a corrupt .gz
        raise DataError(f"cannot read {path}: {e}") from None


def read_text(path: str | os.PathLike) -> str:
    """A whole UTF-8 (optionally gzipped) text file."""
    path = Path(path)
    with _open_text(path) as f:
        return "".join(_lines(f, path))


def _find(root: Path, sub: str, pattern: str) -> Path | None:
    matches = sorted((root / sub).glob(pattern))
    return matches[0] if matches else None


# ---------------------------------------------------------------- WikiText-2

def wikitext2_rows(split: str, root: Path | None) -> list[str]:
    """Rows as the HF `wikitext-2-raw-v1` split has them: one per line, whitespace-only lines become ''."""
    if split not in ("train", "validation", "test"):
        raise DataError(f"unknown WikiText-2 split {split!r}")
    if root is not None:
        path = root / "wikitext2" / "raw" / f"{split}.txt"
        if not path.is_file():
            hint = ""
            if split == "train":
                hint = " (the shared mirror has no train split: calibrate on c4 or a local file)"
            raise DataError(f"missing data file: {path}{hint}")
        text = read_text(path)
        return [line if line.strip() else "" for line in text.splitlines(keepends=True)]
    return list(_hub_dataset("Salesforce/wikitext", "wikitext-2-raw-v1", split=split)["text"])


def wikitext2_eval_text(split: str, root: Path | None) -> str:
    """The standard perplexity text: rows joined by blank lines (one tokenizer call, as Wanda/SparseGPT)."""
    return "\n\n".join(wikitext2_rows(split, root))


# ---------------------------------------------------------------- C4

def c4_train_documents(root: Path | None) -> list[str]:
    """Calibration documents: the whole train shard (hub) or the mirror's sample minus the held-out tail."""
    if root is None:
        return list(_hub_dataset("allenai/c4", data_files={"train": C4_HUB_TRAIN}, split="train")["text"])
    path = _find(root, "c4", C4_TRAIN_GLOB)
    if path is None:
        raise DataError(f"missing data file: {root / 'c4' / C4_TRAIN_GLOB}")
    docs = read_jsonl(path, "text")
    if _find(root, "c4", C4_VALIDATION_GLOB) is None:
        docs = docs[:-C4_HOLDOUT_DOCS]
    return docs


def c4_eval_documents(root: Path | None) -> tuple[list[str], str]:
    """Held-out C4 documents and a label saying which they are."""
    if root is None:
        docs = _hub_dataset("allenai/c4", data_files={"validation": C4_HUB_VALIDATION}, split="validation")["text"]
        return list(docs[:C4_VALIDATION_DOCS]), f"c4 validation shard 00000, first {C4_VALIDATION_DOCS} documents"
    val = _find(root, "c4", C4_VALIDATION_GLOB)
    if val is not None:
        return read_jsonl(val, "text")[:C4_VALIDATION_DOCS], f"{val.name}, first {C4_VALIDATION_DOCS} documents"
    train = _find(root, "c4", C4_TRAIN_GLOB)
    if train is None:
        raise DataError(f"missing data file: {root / 'c4' / C4_TRAIN_GLOB}")
    docs = read_jsonl(train, "text")
    held = docs[-C4_HOLDOUT_DOCS:]
    return held, f"{train.name}, last {len(held)} documents (held out from calibration; not the paper's C4 validation)"


def _hub_dataset(path: str, name: str | None = None, **kwargs):
    try:
        from datasets import load_dataset

        return load_dataset(path, name, **kwargs)
    except Exception as e:  # noqa: BLE001 - offline or missing: one clear line
        raise DataError(
            f"cannot load {path} from the Hugging Face hub ({type(e).__name__}); pass --data-dir or set {ENV_VAR} "
            "to a local mirror"
        ) from e


# ---------------------------------------------------------------- calibration samplers (pure)

def sample_document_windows(
    documents: Sequence[str], encode: Callable[[str], list[int]], nsamples: int, seqlen: int, seed: int
) -> torch.Tensor:
    """Wanda/SparseGPT C4 protocol, sample for sample: Python `random` seeded once; draw a document until one has
    MORE than `seqlen` tokens; draw a window start in [0, len - seqlen - 1]. Returns (nsamples, seqlen) int64."""
    if not any(documents):
        raise DataError("no calibration documents")
    rng = random.Random(seed)
    lengths: dict[int, list[int]] = {}
    out = torch.empty(nsamples, seqlen, dtype=torch.long)
    tries = 0
    for s in range(nsamples):
        while True:
            i = rng.randint(0, len(documents) - 1)
            if i not in lengths:
                lengths[i] = encode(documents[i])
            if len(lengths[i]) > seqlen:
                break
            tries += 1
            if tries > 100 * len(documents) + 10_000 and not any(len(t) > seqlen for t in lengths.values()):
                raise DataError(f"no calibration document is longer than seqlen={seqlen} tokens")
        ids = lengths[i]
        j = rng.randint(0, len(ids) - seqlen - 1)
        out[s] = torch.tensor(ids[j : j + seqlen])
    return out


def sample_stream_windows(ids: Sequence[int] | torch.Tensor, nsamples: int, seqlen: int, seed: int) -> torch.Tensor:
    """Wanda's WikiText-2 train sampler: random windows of one token stream."""
    ids = torch.as_tensor(ids, dtype=torch.long).flatten()
    if ids.numel() <= seqlen + 1:
        raise DataError(f"calibration text has {ids.numel()} tokens, fewer than seqlen={seqlen} + 2")
    rng = random.Random(seed)
    starts = [rng.randint(0, ids.numel() - seqlen - 1) for _ in range(nsamples)]
    return torch.stack([ids[j : j + seqlen] for j in starts])


def encoder(tokenizer) -> Callable[[str], list[int]]:
    return lambda text: tokenizer(text, add_special_tokens=True)["input_ids"]


def calibration_windows(
    source: str, tokenizer, nsamples: int, seqlen: int, seed: int, root: Path | None
) -> torch.Tensor:
    """(nsamples, seqlen) token windows from 'c4', 'wikitext2', a .jsonl (documents, field 'text') or a text file."""
    if nsamples < 1 or seqlen < 2:
        raise DataError("nsamples must be >= 1 and seqlen >= 2")
    if source == "c4":
        return sample_document_windows(c4_train_documents(root), encoder(tokenizer), nsamples, seqlen, seed)
    if source == "wikitext2":
        text = " ".join(wikitext2_rows("train", root))
        return sample_stream_windows(encoder(tokenizer)(text), nsamples, seqlen, seed)
    path = Path(source).expanduser()
    if not path.is_file():
        raise DataError(f"unknown calibration source {source!r}: not c4, wikitext2 or an existing file")
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        return sample_document_windows(calibration_file_text(path), encoder(tokenizer), nsamples, seqlen, seed)
    return sample_stream_windows(encoder(tokenizer)(calibration_file_text(path)), nsamples, seqlen, seed)


def calibration_file_text(path: Path) -> list[str] | str:
    """Documents of a .jsonl calibration file, or the text of any other file; empty ones are an error."""
    text = read_jsonl(path, "text") if path.name.endswith((".jsonl", ".jsonl.gz")) else read_text(path)
    if not any(t.strip() for t in ([text] if isinstance(text, str) else text)):
        raise DataError(f"calibration file {path} holds no text")
    return text


def eval_tokens(dataset: str, tokenizer, root: Path | None, split: str = "test",
                max_tokens: int | None = None) -> tuple[torch.Tensor, str]:
    """One token stream for perplexity, and a label of what text it is.

    max_tokens: only the stream's first max_tokens are needed (`ppl --max-windows`); they are the same tokens as
    the whole text's, from tokenising a prefix of it (see leading_tokens)."""
    if dataset == "wikitext2":
        text = wikitext2_eval_text(split, root)
        label = f"wikitext-2-raw-v1 {split}"
    elif dataset == "c4":
        docs, label = c4_eval_documents(root)
        text = " ".join(docs)
    else:
        raise DataError(f"unknown evaluation dataset {dataset!r}; choose wikitext2 or c4")
    ids = tokenizer(text)["input_ids"] if max_tokens is None else leading_tokens(tokenizer, text, max_tokens)
    return torch.tensor(ids, dtype=torch.long), label


# Tokens past the ones needed that a prefix must hold before its cut is trusted (far beyond one pre-token).
PREFIX_MARGIN_TOKENS = 256


def leading_tokens(tokenizer, text: str, count: int) -> list[int]:
    """The first `count` ids of tokenizer(text)["input_ids"], without tokenising the whole text (WikiText-2 test is
    ~290,000 tokens; a quick run needs ~1,000): tokenise a prefix that yields `count` + a margin of tokens, and
    accept it only when a prefix twice as long gives the same first `count` ids (a cut changes only the tokens
    next to it). Otherwise, and for a short text, the whole text is tokenised."""
    size = max(4096, 8 * count)  # characters; a token is ~4 characters of English
    while 2 * size < len(text):
        head = tokenizer(text[:size])["input_ids"]
        if len(head) >= count + PREFIX_MARGIN_TOKENS:
            if tokenizer(text[: 2 * size])["input_ids"][:count] == head[:count]:
                return head[:count]
        size *= 2
    return tokenizer(text)["input_ids"][:count]


# ---------------------------------------------------------------- cached calibration artifacts

def save_calibration(path, input_ids: torch.Tensor, meta: dict) -> None:
    from safetensors.torch import save_file

    from .io import atomic_file

    with atomic_file(path) as tmp:
        save_file({"input_ids": input_ids.contiguous()}, str(tmp), metadata={k: str(v) for k, v in meta.items()})


def load_calibration(path) -> tuple[torch.Tensor, dict]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing calibration file: {path}")
    try:
        with safe_open(str(path), "pt") as f:
            ids, meta = f.get_tensor("input_ids"), dict(f.metadata() or {})
    except Exception as e:  # noqa: BLE001
        raise DataError(f"cannot read calibration file {path}: {_one_line(e)}") from e
    if ids.dim() != 2 or ids.dtype != torch.long:
        raise DataError(f"{path}: input_ids must be a 2-D int64 tensor")
    if ids.numel() == 0:
        raise DataError(f"{path}: holds 0 calibration windows")
    check_token_ids(ids, None, path)
    return ids, meta


def check_token_ids(ids: torch.Tensor, vocab_size: int | None, source) -> None:
    """Token ids must index the embedding: 0 <= id < vocab_size (when known)."""
    low, high = int(ids.min()), int(ids.max())
    if low < 0:
        raise DataError(f"{source}: token id {low} is negative")
    if vocab_size is not None and high >= vocab_size:
        raise DataError(f"{source}: token id {high} is not below the model's vocabulary size {vocab_size}")


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__
