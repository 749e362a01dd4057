"""Parse each GGUF file once per load, not once per transformers call.

Loading a GGUF through transformers parses its header again for the config, the weights and the tokenizer (each
calls `load_gguf_checkpoint`, which builds a fresh `gguf.GGUFReader`: ~4.5 s for SmolLM2's 151 MB on a 2-core CPU,
most of it the tokenizer's 49,152 vocabulary strings), and its GGUF -> HF name map rebuilds gguf's `TensorNameMap`
for every submodule it recurses into (~400 times for SmolLM2, ~19 ms each). Inside `gguf_parsed_once()` both are
memoised: a file's reader is built once (read-only mode only; keyed on path, size and mtime, so a rewritten file is
parsed again) and a name map once per (architecture, block count). transformers imports both names from `gguf` at
call time, so replacing the package attributes for the duration reaches every call; they are restored on exit,
and a nested use joins the open one. The readers are memory maps of read-only files: sharing one changes nothing
that is loaded.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Iterator


@contextlib.contextmanager
def gguf_parsed_once() -> Iterator[None]:
    try:
        import gguf
    except ImportError:  # no gguf package: nothing parses GGUF files here
        yield
        return
    original_reader, original_name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    if getattr(original_reader, "_wandapp_memo", False):  # nested: the open scope already memoises
        yield
        return
    readers: dict[tuple, object] = {}

    def key_of(path, mode) -> tuple | None:
        if mode != "r":  # a writable map must be the caller's own
            return None
        st = os.stat(path)
        return os.path.realpath(path), st.st_size, st.st_mtime_ns

    class MemoReader(original_reader):
        _wandapp_memo = True

        def __new__(cls, path, mode="r"):
            key = key_of(path, mode)
            if key is None:
                return super().__new__(cls)
            if key not in readers:
                readers[key] = super().__new__(cls)
            return readers[key]

        def __init__(self, path, mode="r"):
            if not getattr(self, "_wandapp_parsed", False):
                super().__init__(path, mode)
                self._wandapp_parsed = True

    gguf.GGUFReader = MemoReader
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original_name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = original_reader, original_name_map
        readers.clear()
