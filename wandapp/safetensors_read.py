"""Read safetensors tensors with plain file reads, not a memory map.

safetensors' `safe_open` maps the file, and every page a tensor is read from stays mapped, hence counted in the
process's resident memory, while the handle is open: streaming a 26 GB checkpoint block by block through it ends
with the whole file resident. Here each tensor is read (pread) into memory of its own, which is freed with it;
the file's pages live only in the kernel's page cache.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch

from .errors import WandappError

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
_MAX_HEADER = 100 * 1024 * 1024  # the format's own limit


class SafetensorsFile:
    """One .safetensors file: its header parsed once, each tensor read on request (thread-safe: pread)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.fd = -1
        try:
            self.fd = os.open(self.path, os.O_RDONLY)
        except OSError as e:
            raise WandappError(f"{self.path}: cannot open the checkpoint file ({e.strerror})") from None
        try:
            self.entries, self.data_start = self._header()
        except Exception:
            self.close()
            raise

    def _header(self) -> tuple[dict, int]:
        size = os.fstat(self.fd).st_size
        raw = os.pread(self.fd, 8, 0)
        (n,) = struct.unpack("<Q", raw) if len(raw) == 8 else (None,)
        if n is None or n > min(_MAX_HEADER, size - 8):
            raise WandappError(f"{self.path}: not a safetensors file (bad header length)")
        try:
            header = json.loads(os.pread(self.fd, n, 8))
        except ValueError as e:
            raise WandappError(f"{self.path}: not a safetensors file (header is not JSON: {e})") from None
        header.pop("__metadata__", None)
        for key, e in header.items():
            begin, end = e["data_offsets"]
            if e["dtype"] not in DTYPES or not 0 <= begin <= end <= size - 8 - n:
                raise WandappError(f"{self.path}: tensor {key!r} has an unknown dtype or lies outside the file")
        return header, 8 + n

    def keys(self) -> list[str]:
        return list(self.entries)

    def read(self, key: str) -> torch.Tensor:
        e = self.entries[key]
        begin, end = e["data_offsets"]
        out = torch.empty(e["shape"], dtype=DTYPES[e["dtype"]])
        if out.numel() * out.element_size() != end - begin:
            raise WandappError(f"{self.path}: tensor {key!r}: shape {e['shape']} does not match its byte length")
        buf = memoryview(out.view(-1).view(torch.uint8).numpy()) if out.numel() else memoryview(b"")
        done = 0
        while done < len(buf):  # a large read may come back in parts
            got = os.preadv(self.fd, [buf[done:]], self.data_start + begin + done)
            if got <= 0:
                raise WandappError(f"{self.path}: truncated while reading {key!r}")
            done += got
        return out

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self):
        self.close()
