"""One library context per CUDA device, made on first use, as torch keeps one cuBLAS handle per device.

A custom op cannot carry a Python object, so the ops look their library's context up by the tensors' device.
"""

from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch

T = TypeVar("T")


def per_device(factory: Callable[[torch.device], T]) -> Callable[[torch.device], T]:
    """context_for(device) -> the one factory(device) of that CUDA device ('cuda' means the current one)."""
    @functools.cache
    def shared(index: int) -> T:
        return factory(torch.device("cuda", index))

    def context_for(device: torch.device) -> T:
        device = torch.device(device)
        return shared(device.index if device.index is not None else torch.cuda.current_device())

    return context_for
