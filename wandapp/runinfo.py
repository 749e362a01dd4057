"""What every result records about where and how it ran: library versions, device, peak memory, timing."""

from __future__ import annotations

import os
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


def peak_cpu_rss_bytes(status: str = "/proc/self/status") -> int:
    """This process's own peak RSS: VmHWM, which belongs to its address space. Not getrusage's ru_maxrss: at exec
    Linux carries the parent's peak into it (subprocess uses vfork), so a job started by a process that once held a
    26 GB model reports 26 GB. getrusage only where /proc is missing (macOS)."""
    try:
        with open(status) as lines:
            for line in lines:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def where_it_ran() -> dict:
    """CUDA_VISIBLE_DEVICES as this process got it and torch.cuda.current_device() (None when CUDA never started),
    so a job's log and results show which GPU it used (one per job: `wandapp gpu-slot`)."""
    initialized = torch.cuda.is_available() and torch.cuda.is_initialized()
    return {"cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "cuda_current_device": torch.cuda.current_device() if initialized else None}


@contextmanager
def job_log(command: str):
    """One line on stderr (the job's log) when a command starts and when it ends: UTC times, GPU, exit."""
    from .gpuslots import utc_now

    print(f"wandapp {command}: start {utc_now()} host {platform.node()} pid {os.getpid()} "
          f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')}", file=sys.stderr, flush=True)
    status = "failed"
    try:
        yield
        status = "ok"
    finally:
        gpu = where_it_ran()["cuda_current_device"]
        print(f"wandapp {command}: end {utc_now()} {status}"
              + (f" torch.cuda.current_device()={gpu}" if gpu is not None else ""), file=sys.stderr, flush=True)


@contextmanager
def measured(device: torch.device):
    """Yield a dict that receives wall time and peak GPU/CPU memory of the enclosed work."""
    from .gpuslots import utc_now

    info: dict = {"started_at": utc_now()}
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
    info.update(ended_at=utc_now(), **where_it_ran())
