"""The cuSPARSELt operand descriptions: every Layout must describe y = x @ W^T exactly (checked by emulation)."""

import os

import numpy as np
import pytest

from wandapp.sparse24.cusparselt import _OP_T, _ORDER_ROW, Layout, descriptors


def _read(memory: np.ndarray, desc) -> np.ndarray:
    """The logical operand op(S) that cuSPARSELt sees in `memory` under (rows, cols, ld, order, op)."""
    rows, cols, ld, order, op = desc
    flat = memory.reshape(-1)
    i, j = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    stored = flat[i * ld + j] if order == _ORDER_ROW else flat[j * ld + i]
    return stored.T if op == _OP_T else stored


@pytest.mark.parametrize("layout", Layout.every(), ids=lambda l: l.name())
def test_descriptors_compute_x_times_w_transposed(layout):
    rng = np.random.default_rng(0)
    out_f, in_f, tokens = 6, 8, 4
    w, x = rng.standard_normal((out_f, in_f)), rng.standard_normal((tokens, in_f))
    w_mem = np.ascontiguousarray(w.T if layout.weight_t else w)
    x_mem = np.ascontiguousarray(x.T if layout.x_t else x)
    a_desc, b_desc, c_desc = descriptors(layout, out_f, in_f, tokens)
    a_mem, b_mem = (w_mem, x_mem) if layout.sparse == "A" else (x_mem, w_mem)
    d = _read(a_mem, a_desc) @ _read(b_mem, b_desc)
    assert c_desc[4] != _OP_T
    rows, cols, ld, order, _ = c_desc
    out = np.zeros(rows * cols)
    i, j = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    out[(i * ld + j) if order == _ORDER_ROW else (j * ld + i)] = d  # write D as cuSPARSELt would
    y = out.reshape((out_f, tokens) if layout.y_t else (tokens, out_f))
    np.testing.assert_allclose(y.T if layout.y_t else y, x @ w.T, rtol=1e-12)


def test_layout_names_round_trip_and_default_is_torch():
    assert all(Layout.parse(l.name()) == l for l in Layout.every())
    assert len({l.name() for l in Layout.every()}) == 32
    assert Layout() == Layout.parse("sparseA+y_t")
    with pytest.raises(ValueError):
        descriptors(Layout(sparse="C"), 4, 4, 4)


def test_parse_layouts():
    from wandapp.sparse24.cusparselt import DEFAULT_LAYOUTS, TORCH_LAYOUT, parse_layouts

    assert parse_layouts("torch") == [TORCH_LAYOUT]
    natural = parse_layouts("natural")
    assert len(natural) == 16 and not any(l.x_t for l in natural) and TORCH_LAYOUT in natural
    assert len(parse_layouts("all")) == 32 and len(parse_layouts(DEFAULT_LAYOUTS)) == 3
    assert parse_layouts("sparseB,sparseA+weight_t+y_t") == [Layout("B", y_t=False), Layout("A", weight_t=True)]
    for bad in ("sparseC", "sparseA+sideways", "", ","):  # an empty list would leave the tuner no layout
        with pytest.raises(ValueError, match="unknown cuSPARSELt layout"):
            parse_layouts(bad)


def test_a_missing_library_override_is_named_in_the_error(monkeypatch, tmp_path):
    from wandapp.sparse24 import cusparselt

    monkeypatch.setenv(cusparselt.LIBRARY_ENV, str(tmp_path / "libcusparseLt.so.0"))
    with pytest.raises(OSError, match="WANDAPP_CUSPARSELT=.*no such file"):
        cusparselt._load_library()


def test_the_library_is_never_taken_from_the_current_directory(monkeypatch, tmp_path):
    """An empty sys.path entry is the current directory: a libcusparseLt planted there must not be loaded."""
    import ctypes
    import sys

    from wandapp.sparse24 import cusparselt

    for folder in (tmp_path, tmp_path / "nvidia" / "cusparselt" / "lib", tmp_path / "lib"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "libcusparseLt.so.0").write_text("planted")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", ["", str(tmp_path), *sys.path])
    monkeypatch.setenv("LD_LIBRARY_PATH", f":{tmp_path}")
    monkeypatch.delenv(cusparselt.LIBRARY_ENV, raising=False)
    monkeypatch.setattr(cusparselt, "_loaded_library", lambda: None)
    tried = []

    def fake_cdll(path, *args, **kwargs):
        tried.append(str(path))
        raise OSError("not loading in a test")

    monkeypatch.setattr(ctypes, "CDLL", fake_cdll)
    assert all(not d.startswith(str(tmp_path)) for d in cusparselt.library_dirs())
    try:
        cusparselt._load_library()
    except OSError:
        pass
    assert tried == [p for p in tried if os.path.isabs(p) and not p.startswith(str(tmp_path))], tried
    monkeypatch.setenv(cusparselt.LIBRARY_ENV, "libcusparseLt.so.0")  # a relative override is not a path to trust
    with pytest.raises(OSError, match="absolute path"):
        cusparselt._load_library()
