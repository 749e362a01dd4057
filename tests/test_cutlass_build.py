"""The CUTLASS sparse kernels' build on a machine without a GPU: the source's configs, the nvcc calls, the cache.

The kernels themselves run only on Hopper (tests/test_gpu.py); here a stand-in nvcc checks what the build asks
of the compiler and that a library is built once, atomically, and found again.
"""

import ctypes
import os
import re
import stat

import pytest
import torch

from wandapp.errors import WandappError
from wandapp.sparse24 import cutlass_sparse as cs

# Each config's compressed-weight layout ("family"): 1 for a K tile of 64, 0 for 128, as the source derives it.
FAMILIES = [int(name.split("_")[0].endswith("x64")) for name in cs.CONFIG_NAMES]


def test_source_defines_the_configs_python_expects():
    """The source's one config list (index, tile, cluster, schedule) names exactly CONFIG_NAMES, in order."""
    source = cs.SOURCE.read_text()
    listed = re.findall(r"^  X\((\d+), (\d+), (\d+), (\d+), (\d+), (\d+), ([a-z]+)\)", source, flags=re.M)
    assert [int(row[0]) for row in listed] == list(range(cs.CONFIG_COUNT))
    names = tuple(f"{m}x{n}x{k}_c{cm}x{cn}_{s}" for _, m, n, k, cm, cn, s in listed)
    assert names == cs.CONFIG_NAMES
    assert all(k in ("64", "128") for _, _, _, k, *_ in listed)  # the two compressed layouts (families)


def test_compile_commands_build_each_config_for_sm90a(tmp_path):
    cmds = cs.compile_commands("nvcc", [tmp_path / "include"], tmp_path)
    assert len(cmds) == cs.CONFIG_COUNT + 1
    units = [next(a for a in cmd if a.startswith("-DWANDAPP_")) for cmd in cmds]
    assert units == ["-DWANDAPP_COMMON"] + [f"-DWANDAPP_CONFIG={i}" for i in range(cs.CONFIG_COUNT)]
    assert all("-gencode=arch=compute_90a,code=sm_90a" in cmd for cmd in cmds)
    assert len({cmd[-1] for cmd in cmds}) == len(cmds)  # one object file each


def _fake_toolchain(tmp_path, fail_on: str | None = None):
    """An nvcc stand-in that writes each -o target and logs its calls, and a CUTLASS tree with the sparse header."""
    log = tmp_path / "calls.log"
    nvcc = tmp_path / "cuda" / "bin" / "nvcc"
    nvcc.parent.mkdir(parents=True)
    (tmp_path / "cuda" / "lib64").mkdir()
    fail = f'case "$*" in *{fail_on}*) echo "error: boom" >&2; exit 2;; esac' if fail_on else ""
    nvcc.write_text(f"""#!/bin/sh
echo "$*" >> {log}
{fail}
[ "$1" = --version ] && {{ echo "Cuda compilation tools, release 13.0"; exit 0; }}
while [ $# -gt 0 ]; do [ "$1" = -o ] && echo built > "$2"; shift; done
""")
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IEXEC)
    header = tmp_path / "cutlass" / "include" / "cutlass" / "transform" / "kernel" / "sm90_sparse_gemm_compressor.hpp"
    header.parent.mkdir(parents=True)
    header.write_text("")
    return nvcc, tmp_path / "cutlass", log


def test_build_library_compiles_once_and_caches(tmp_path, monkeypatch):
    nvcc, cutlass, log = _fake_toolchain(tmp_path)
    monkeypatch.setenv("CUDACXX", str(nvcc))
    monkeypatch.setenv("CUTLASS_PATH", str(cutlass))
    lib = cs.build_library(tmp_path / "cache", jobs=2)
    assert lib.name == cs.LIBRARY_NAME and lib.read_text() == "built\n"
    compiles = [line for line in log.read_text().splitlines() if " -c " in line]
    assert len(compiles) == cs.CONFIG_COUNT + 1
    assert any("-shared" in line and "-lcudart_static" in line for line in log.read_text().splitlines())
    # no object files or half-built library beside it; the manifest records what it was built from
    assert sorted(lib.parent.iterdir()) == sorted([lib, lib.with_name(cs.MANIFEST)])
    calls = len(log.read_text().splitlines())
    assert cs.build_library(tmp_path / "cache") == lib
    assert len(log.read_text().splitlines()) == calls + 1  # only `nvcc --version`, for the cache key


def test_a_cached_library_that_differs_from_its_record_is_rebuilt(tmp_path, monkeypatch):
    import json

    nvcc, cutlass, log = _fake_toolchain(tmp_path)
    monkeypatch.setenv("CUDACXX", str(nvcc))
    monkeypatch.setenv("CUTLASS_PATH", str(cutlass))
    builds = lambda: sum("-shared" in line for line in log.read_text().splitlines())  # noqa: E731
    lib = cs.build_library(tmp_path / "cache")
    record = json.loads(lib.with_name(cs.MANIFEST).read_text())
    assert record["source_sha256"] == __import__("hashlib").sha256(cs.SOURCE.read_bytes()).hexdigest()
    assert any("-gencode=arch=compute_90a,code=sm_90a" in cmd for cmd in record["commands"])
    assert builds() == 1
    lib.write_text("someone else's code\n")  # swapped or damaged in the cache: its bytes no longer match
    assert cs.build_library(tmp_path / "cache") == lib and lib.read_text() == "built\n" and builds() == 2
    lib.with_name(cs.MANIFEST).unlink()  # a library without its record (e.g. an older wandapp's) is not trusted
    assert cs.build_library(tmp_path / "cache") == lib and builds() == 3
    # other build flags: a new record and key, so a new build
    original = cs.compile_commands
    monkeypatch.setattr(cs, "compile_commands", lambda *a: [[*cmd[:1], "-G", *cmd[1:]] for cmd in original(*a)])
    other = cs.build_library(tmp_path / "cache")
    assert other != lib and builds() == 4
    assert json.loads(other.with_name(cs.MANIFEST).read_text())["key"] != record["key"]
    assert cs.build_library(tmp_path / "cache") == other and builds() == 4  # and that one is reused


@pytest.mark.parametrize("fail_on, message", [("WANDAPP_CONFIG=3", "nvcc failed on -DWANDAPP_CONFIG=3 .*boom"),
                                               ("--version", "--version failed: error: boom")])
def test_a_failing_nvcc_is_a_clear_error_and_leaves_nothing(tmp_path, monkeypatch, fail_on, message):
    nvcc, cutlass, _ = _fake_toolchain(tmp_path, fail_on=fail_on)
    monkeypatch.setenv("CUDACXX", str(nvcc))
    monkeypatch.setenv("CUTLASS_PATH", str(cutlass))
    with pytest.raises(WandappError, match=message):
        cs.build_library(tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.so"))


def test_missing_toolchain_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDACXX", str(tmp_path / "no-nvcc"))
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(WandappError, match="nvcc not found"):
        cs.find_nvcc()
    monkeypatch.setenv("CUTLASS_PATH", str(tmp_path))
    with pytest.raises(WandappError, match="no CUTLASS 3.6\\+ headers"):
        cs.cutlass_include_dirs()


def test_choice_names_round_trip():
    choice = cs.Choice(2, 4, cs.RASTERS["along_m"])
    assert choice.name() == "cutlass/256x128x128_c1x1_coop/swizzle4/along_m"
    assert cs.is_cutlass(choice.name()) and not cs.is_cutlass("sparseA+y_t")
    assert all(cs.Choice.parse(c.name()) == c for c in
               [cs.Choice(i, s, r) for i in range(cs.CONFIG_COUNT) for s in (1, 8) for r in (0, 1, 2)])
    with pytest.raises(ValueError, match="not a CUTLASS kernel choice"):
        cs.Choice.parse("cutlass/999x1x1_c1x1_coop/swizzle1/along_m")


@pytest.mark.skipif(not os.environ.get("WANDAPP_BUILD_CUTLASS"),
                    reason="set WANDAPP_BUILD_CUTLASS=1 with nvcc and the CUTLASS headers at hand (CI does; minutes)")
def test_real_nvcc_builds_a_library_that_loads_without_a_gpu(tmp_path, monkeypatch):
    # The real compiler and headers: every config must compile for sm_90a and link. The library's host-side
    # entry points need no GPU, so its configs and the compressed sizes are checked here too.
    path = cs.build_library(cache_root=tmp_path)
    assert cs.build_library(cache_root=tmp_path) == path  # found again, not rebuilt
    monkeypatch.setenv(cs.LIBRARY_ENV, str(path))
    cs.load_library.cache_clear()
    try:
        lib = cs.load_library()  # raises unless the library holds exactly CONFIG_NAMES
        assert [lib.wandapp_sm90_sparse_config_family(i) for i in range(cs.CONFIG_COUNT)] == FAMILIES
        for family in (0, 1):
            values, meta = ctypes.c_uint64(), ctypes.c_uint64()
            lib.wandapp_sm90_sparse_sizes(4096, 11008, family, ctypes.byref(values), ctypes.byref(meta))
            # half the fp16 values kept (2 bytes each), 2 bits of position per kept value
            assert (values.value, meta.value) == (4096 * 11008, 4096 * 11008 // 8)
    finally:
        cs.load_library.cache_clear()


class _FakeCutlass:
    """CutlassSparse's tuning surface on the CPU: exact products, and a made-up time per choice."""

    families = FAMILIES

    def __init__(self):
        self.last = self.last_x = None

    def compress(self, weight, family):
        return weight, None

    def linear(self, values, meta, x, out_features, choice, out=None):
        self.last, self.last_x = choice, x
        return x @ values.t()

    choices = cs.CutlassSparse.choices

    @staticmethod
    def ms(choice):  # config 9 fastest, then 2, then 1; swizzle 4 helps, along_n a little
        rank = {9: 1.0, 2: 1.1, 1: 1.2}.get(choice.config, 2.0)
        return rank - 0.05 * (choice.swizzle == 4) - 0.01 * (choice.raster == 2)


@pytest.mark.parametrize("top", [3, 1, None])
def test_tuning_cutlass_alone_times_the_swizzles_of_the_top_configs(monkeypatch, top):
    from wandapp.sparse24 import linear_sweep

    fake = _FakeCutlass()

    def fake_median(fn, device, calls, iters):
        fn()
        return fake.ms(fake.last)

    monkeypatch.setattr(linear_sweep, "median_ms_graph", fake_median)
    records = linear_sweep.tune_algorithms(None, "down", (16, 32), 8, torch.float32, torch.device("cpu"), layouts=(),
                                           cutlass=fake, cutlass_top=top)
    timed = cs.CONFIG_COUNT * 2 + (cs.CONFIG_COUNT if top is None else top) * 3 * 2  # rasters, then swizzles 2-8
    assert len(records) == timed and all("sparse_ms" in r and r["rel_err"] < 1e-6 for r in records)
    assert records[0]["layout"] == "cutlass/128x256x64_c1x1_coop/swizzle4/along_n"
    swizzled = {cs.Choice.parse(r["layout"]).config for r in records if "/swizzle1/" not in r["layout"]}
    assert swizzled == (set(range(cs.CONFIG_COUNT)) if top is None else {9, 2, 1} if top == 3 else {9})


def test_tuning_times_the_operands_it_is_given(monkeypatch):
    from wandapp.sparse24 import linear_sweep
    from wandapp.sparse24.sparsity import random_2of4_

    fake = _FakeCutlass()

    def fake_median(fn, device, calls, iters):
        fn()
        return 1.0

    monkeypatch.setattr(linear_sweep, "median_ms_graph", fake_median)
    weight, x = random_2of4_(torch.randn(16, 32)), torch.randn(8, 32)
    records = linear_sweep.tune_algorithms(None, "down", (16, 32), 8, torch.float32, torch.device("cpu"), layouts=(),
                                           cutlass=fake, cutlass_top=1, operands=(weight, x))
    assert fake.last_x is x and all(r["rel_err"] < 1e-6 for r in records)
