"""2:4 sparse fp16 products with CUTLASS's Hopper kernels (sm_90a), built from source on first use.

cuSPARSELt's best H100 kernels reached about 1.5x of cuBLAS on LLaMA-7B MLP products (docs/speed.md); these
are CUTLASS 3's sparse warp-specialized GEMMs with tile shapes, clusters and rasterization chosen per shape by
timing (`tune`). The kernel source is `kernels/sm90_sparse_gemm.cu`; it takes x as it comes (tokens, in) and
writes y as torch wants it (tokens, out), so no transpose runs on either side.

Building needs nvcc (CUDA 12.3 or newer: `CUDACXX`, `CUDA_HOME` or PATH) and CUTLASS 3.6+ headers
(`CUTLASS_PATH`, or the `nvidia-cutlass` pip package). The library is cached under `~/.cache/wandapp`
(`WANDAPP_CACHE`) by a hash of the source, the compiler and every compile and link flag, with `build.json`
beside it recording them and the library's own hash; a cached library that no longer matches is rebuilt, not
loaded. `WANDAPP_CUTLASS_SPARSE` points at a prebuilt one instead (an explicit path, loaded as given).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import WandappError
from ..io import write_json
from . import INSTALL

log = logging.getLogger(__name__)

LIBRARY_ENV = "WANDAPP_CUTLASS_SPARSE"  # path of a prebuilt library
SOURCE = Path(__file__).with_name("kernels") / "sm90_sparse_gemm.cu"
LIBRARY_NAME = "libwandapp_sm90_sparse.so"
# The configs of the source's WANDAPP_SM90_CONFIGS list, in index order (tile MxNxK, cluster, schedule); the
# library reports the same names, and tests/test_cutlass_build.py checks the list against them.
CONFIG_NAMES = ("128x128x128_c1x2_coop", "128x256x128_c1x1_coop", "256x128x128_c1x1_coop", "256x128x128_c2x1_coop",
                "128x128x128_c1x1_ping", "64x128x128_c1x2_ping", "64x256x128_c1x1_ping", "128x128x128_c2x1_coop",
                "256x128x64_c1x1_coop", "128x256x64_c1x1_coop", "256x128x64_c2x1_coop", "128x128x64_c1x1_ping",
                "256x128x128_c1x2_coop", "128x256x64_c2x1_coop")
CONFIG_COUNT = len(CONFIG_NAMES)
RASTERS = {"heuristic": 0, "along_m": 1, "along_n": 2}
PREFIX = "cutlass/"  # a tuned choice's name, in the place of a cuSPARSELt layout name


@dataclass(frozen=True)
class Choice:
    """One way to run a product: the kernel config index, the tile swizzle and the raster order.

    Its name ("cutlass/256x128x128_c1x1_coop/swizzle4/along_m") stands where the tuner writes a cuSPARSELt
    layout, so one (alg_id, split_k, layout) record describes a product of either library.
    """

    config: int = 2
    swizzle: int = 1
    raster: int = 0

    def name(self) -> str:
        raster = next(k for k, v in RASTERS.items() if v == self.raster)
        return f"{PREFIX}{CONFIG_NAMES[self.config]}/swizzle{self.swizzle}/{raster}"

    @staticmethod
    def parse(text: str) -> "Choice":
        try:
            config, swizzle, raster = text.removeprefix(PREFIX).split("/")
            return Choice(CONFIG_NAMES.index(config), int(swizzle.removeprefix("swizzle")), RASTERS[raster])
        except (ValueError, KeyError):
            raise ValueError(f"not a CUTLASS kernel choice: {text!r}") from None


def is_cutlass(layout_name: str) -> bool:
    return layout_name.startswith(PREFIX)


def find_nvcc() -> str:
    for candidate in (os.environ.get("CUDACXX"), os.environ.get("CUDA_HOME") and
                      os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc"), shutil.which("nvcc")):
        if candidate and os.path.isfile(candidate):
            return candidate
    raise WandappError("nvcc not found: set CUDACXX or CUDA_HOME, or put nvcc on PATH, to build the CUTLASS kernels")


def cutlass_include_dirs() -> list[Path]:
    """CUTLASS's include and tools/util/include, from CUTLASS_PATH or the nvidia-cutlass package."""
    root = os.environ.get("CUTLASS_PATH")
    if not root:
        try:
            import cutlass_library
        except ImportError:
            raise WandappError(f"CUTLASS headers not found: {INSTALL} (nvidia-cutlass), or set CUTLASS_PATH to a "
                               "CUTLASS checkout") from None
        root = os.path.join(os.path.dirname(cutlass_library.__file__), "source")
    dirs = [Path(root) / "include", Path(root) / "tools" / "util" / "include"]
    if not (dirs[0] / "cutlass" / "transform" / "kernel" / "sm90_sparse_gemm_compressor.hpp").is_file():
        raise WandappError(f"{root}: no CUTLASS 3.6+ headers with the sm90 sparse GEMM there")
    return dirs


def compile_commands(nvcc: str, includes: list[Path], build: Path) -> list[list[str]]:
    """One nvcc call per translation unit: the shared part, then one per kernel config."""
    flags = [nvcc, "-std=c++17", "-O3", "-DNDEBUG", "-gencode=arch=compute_90a,code=sm_90a",
             "--expt-relaxed-constexpr", "-Xcompiler", "-fPIC", *[f"-I{d}" for d in includes]]
    units = ["-DWANDAPP_COMMON"] + [f"-DWANDAPP_CONFIG={i}" for i in range(CONFIG_COUNT)]
    return [[*flags, unit, "-c", str(SOURCE), "-o", str(build / f"unit{n}.o")] for n, unit in enumerate(units)]


def _cache_root() -> Path:
    return Path(os.environ.get("WANDAPP_CACHE", Path.home() / ".cache" / "wandapp"))


def link_command(nvcc: str, build: Path) -> list[str]:
    lib_dir = Path(nvcc).resolve().parent.parent / "lib64"
    lib_dir = lib_dir if lib_dir.is_dir() else lib_dir.with_name("lib")
    return [nvcc, "-shared", "-o", str(build / LIBRARY_NAME), *sorted(str(build / f"unit{n}.o")
            for n in range(CONFIG_COUNT + 1)), f"-L{lib_dir}", "-lcudart_static"]


MANIFEST = "build.json"  # beside a cached library: what it was built from; a mismatch rebuilds it


def build_record(nvcc: str, version: str, includes: list[Path]) -> dict:
    """What a build depends on: the source's hash, the compiler and every compile and link flag."""
    placeholder = Path("BUILD")  # the temporary build folder differs per build; the flags do not
    commands = [*compile_commands(nvcc, includes, placeholder), link_command(nvcc, placeholder)]
    record = {"source": SOURCE.name, "source_sha256": hashlib.sha256(SOURCE.read_bytes()).hexdigest(),
              "nvcc": nvcc, "nvcc_version": version.strip(), "includes": [str(d.resolve()) for d in includes],
              "commands": commands}
    record["key"] = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
    return record


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cached_library_is_current(target: Path, record: dict) -> bool:
    """The cached library was built from this record (source hash, flags) and is byte for byte what was built."""
    manifest = target.with_name(MANIFEST)
    try:
        built = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False
    return (target.is_file() and built.get("key") == record["key"]
            and built.get("library_sha256") == _file_sha256(target))


def build_library(cache_root: Path | None = None, jobs: int | None = None) -> Path:
    """Compile and link the kernels once; later calls return the cached library while its recorded source hash,
    flags and bytes still match (otherwise it is rebuilt)."""
    nvcc, includes = find_nvcc(), cutlass_include_dirs()
    probe = subprocess.run([nvcc, "--version"], capture_output=True, text=True)
    if probe.returncode:
        raise WandappError(f"{nvcc} --version failed: {probe.stderr.strip()[-200:]}")
    record = build_record(nvcc, probe.stdout, includes)
    target = (cache_root or _cache_root()) / "sm90_sparse" / record["key"][:16] / LIBRARY_NAME
    if cached_library_is_current(target, record):
        return target
    if target.exists():
        log.warning("rebuilding %s: it does not match its recorded source, flags or bytes", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        build = Path(tmp)
        commands = compile_commands(nvcc, includes, build)
        log.info("building %d CUTLASS sparse kernels with %s (a few minutes, once)", len(commands) - 1, nvcc)
        with ThreadPoolExecutor(jobs or os.cpu_count() or 1) as pool:
            results = list(pool.map(lambda cmd: subprocess.run(cmd, capture_output=True, text=True), commands))
        for cmd, result in zip(commands, results):
            if result.returncode:
                last = (result.stderr.strip().splitlines() or ["no message"])[-1]
                raise WandappError(f"nvcc failed on {cmd[-5]} of {SOURCE.name}: {last}")
        result = subprocess.run(link_command(nvcc, build), capture_output=True, text=True)
        if result.returncode:
            raise WandappError(f"linking the CUTLASS kernels failed: {result.stderr.strip()[-300:]}")
        target.with_name(MANIFEST).unlink(missing_ok=True)  # no manifest vouches for the library while it changes
        os.replace(build / LIBRARY_NAME, target)  # atomic: a half-built library is never found
    write_json(target.with_name(MANIFEST), {**record, "library_sha256": _file_sha256(target)})
    return target


@functools.cache
def load_library() -> ctypes.CDLL:
    path = os.environ.get(LIBRARY_ENV) or str(build_library())
    if not os.path.isfile(path):
        raise WandappError(f"{LIBRARY_ENV}={path}: no such file")
    lib = ctypes.CDLL(path)
    lib.wandapp_sm90_sparse_config_name.restype = ctypes.c_char_p
    lib.wandapp_sm90_sparse_compress_workspace.restype = ctypes.c_size_t
    names = tuple(lib.wandapp_sm90_sparse_config_name(i).decode() for i in range(lib.wandapp_sm90_sparse_configs()))
    if names != CONFIG_NAMES:
        raise WandappError(f"{path} holds other kernel configs than this wandapp's: rebuild it")
    for i in range(lib.wandapp_sm90_sparse_configs()):
        getattr(lib, f"wandapp_sm90_sparse_workspace_{i}").restype = ctypes.c_size_t
    return lib


def available(device: torch.device) -> bool:
    """A Hopper GPU (compute capability 9.0): the kernels use sm_90a instructions (wgmma, TMA)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) == (9, 0)


_ERRORS = {1: "not supported by this config", 2: "initialize failed", 3: "launch failed"}


class CutlassSparse:
    """The built kernels on one device, with their workspaces."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.lib = load_library()
        self.families = [self.lib.wandapp_sm90_sparse_config_family(i) for i in range(CONFIG_COUNT)]
        self._workspace = torch.empty(1 << 20, dtype=torch.uint8, device=self.device)

    def _stream(self) -> ctypes.c_void_p:
        return ctypes.c_void_p(torch.cuda.current_stream(self.device).cuda_stream)

    def compress(self, weight: torch.Tensor, family: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, metadata) of a 2:4 fp16 weight (out, in) in CUTLASS's sm90 layout for a config family (the
        configs of one K tile; `families[config]`)."""
        if weight.dtype != torch.float16:
            raise WandappError(f"the CUTLASS sparse kernels take float16 weights, not {weight.dtype}")
        m, k = weight.shape
        value_bytes, meta_bytes = ctypes.c_uint64(), ctypes.c_uint64()
        self.lib.wandapp_sm90_sparse_sizes(m, k, family, ctypes.byref(value_bytes), ctypes.byref(meta_bytes))
        values = torch.empty(value_bytes.value // 2, dtype=torch.float16, device=weight.device)
        meta = torch.empty(meta_bytes.value, dtype=torch.uint8, device=weight.device)
        ws = torch.empty(max(self.lib.wandapp_sm90_sparse_compress_workspace(m, k, family), 1), dtype=torch.uint8,
                         device=weight.device)
        weight = weight.detach().contiguous()
        status = self.lib.wandapp_sm90_sparse_compress(
            ctypes.c_void_p(weight.data_ptr()), ctypes.c_void_p(values.data_ptr()), ctypes.c_void_p(meta.data_ptr()),
            m, k, family, ctypes.c_void_p(ws.data_ptr()), ctypes.c_size_t(ws.numel()), self._stream())
        if status:
            raise RuntimeError(f"CUTLASS compress of a {m}x{k} weight: {_ERRORS.get(status, status)}")
        torch.cuda.current_stream(weight.device).synchronize()  # `ws` and `weight` may be freed on return
        return values, meta

    def linear(self, values: torch.Tensor, meta: torch.Tensor, x: torch.Tensor, out_features: int,
               choice: Choice = Choice(), out: torch.Tensor | None = None) -> torch.Tensor:
        """x (tokens, in), contiguous fp16 -> y (tokens, out); values and meta compressed for the choice's family."""
        if x.dtype != torch.float16 or not x.is_contiguous():
            raise WandappError(f"the CUTLASS sparse kernels take contiguous float16 x, not {x.dtype} "
                               f"with strides {x.stride()}")
        tokens, k = x.shape
        y = out if out is not None else torch.empty(tokens, out_features, dtype=x.dtype, device=x.device)
        fn = getattr(self.lib, f"wandapp_sm90_sparse_gemm_{choice.config}")
        status = fn(ctypes.c_void_p(values.data_ptr()), ctypes.c_void_p(meta.data_ptr()),
                    ctypes.c_void_p(x.data_ptr()), ctypes.c_void_p(y.data_ptr()), out_features, tokens, k,
                    ctypes.c_void_p(self._workspace.data_ptr()), ctypes.c_size_t(self._workspace.numel()),
                    choice.swizzle, choice.raster, self._stream())
        if status:
            raise RuntimeError(f"CUTLASS sparse GEMM {choice.name()} at ({out_features}, {tokens}, {k}): "
                               f"{_ERRORS.get(status, status)}")
        return y

    def choices(self, swizzles=(1, 2, 4, 8), rasters=(1, 2)) -> list[Choice]:
        return [Choice(c, s, r) for c in range(CONFIG_COUNT) for s in swizzles for r in rasters]
