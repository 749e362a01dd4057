"""What every result records about where and how it ran: library versions, device, peak memory, timing."""

from __future__ import annotations

import platform
import resource
import sys
import time
from contextlib import contextmanager
from importlib import metadata

import torch

PACKAGES = ("wandapp", "torch", "transformers", "peft", "lm_eval", "safetensors", "numpy")


def versions() -> dict:
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    out["cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
    return out


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(name: str | None) -> torch.device:
    from .errors import WandappError

    try:
        device = torch.device(name or default_device())
    except (RuntimeError, ValueError):
        raise WandappError(f"unknown device {name!r}; e.g. cpu, cuda or cuda:1") from None
    if device.type not in ("cpu", "cuda", "mps", "xpu"):
        raise WandappError(f"unsupported device {name!r}; e.g. cpu, cuda or cuda:1")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise WandappError(f"device {name} requested but no CUDA device is available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise WandappError(f"device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def default_dtype(device: torch.device) -> str:
    """float16 on accelerators (the papers' setting); float32 on the CPU, where half matmuls are slow."""
    return "float32" if device.type == "cpu" else "float16"


def peak_cpu_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


@contextmanager
def measured(device: torch.device):
    """Yield a dict that receives wall time and peak GPU/CPU memory of the enclosed work."""
    info: dict = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    yield info
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        info["peak_gpu_mem_bytes"] = torch.cuda.max_memory_allocated(device)
    else:
        info["peak_gpu_mem_bytes"] = None
    info["wall_time_s"] = round(time.perf_counter() - start, 3)
    info["peak_cpu_rss_bytes"] = peak_cpu_rss_bytes()
