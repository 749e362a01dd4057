"""cuSPARSELt called directly, with plans built once and cached.

torch._cslt_sparse_mm builds descriptors and a matmul plan on every call, then frees them; on the H100 with
torch 2.11 and cuSPARSELt 0.8 that host work cost 250-400 ms per call (measured), far above the kernel
itself. Here a plan is made once per (weight shape, token count, algorithm, layout) and reused, so an eager call
costs microseconds and a CUDA graph captures in no time.

A `Layout` says how y[tokens, out] = x[tokens, in] @ W[out, in]^T is posed to the library: which operand is
the 2:4 weight and which tensors are stored transposed. The default is torch's: D[out, tokens] = W @ x^T.
"""

from __future__ import annotations

import ctypes
import glob
import itertools
import os
from dataclasses import dataclass

import torch

_R_16F, _R_16BF = 2, 14  # cudaDataType
_ORDER_ROW = 2  # cusparseOrder_t (COL = 1)
_OP_N, _OP_T = 0, 1
_COMPUTE_32F = 2
_SPARSITY_50 = 0
_ALG_CONFIG_ID, _ALG_CONFIG_MAX_ID, _SPLIT_K = 0, 1, 3
_DTYPES = {torch.float16: _R_16F, torch.bfloat16: _R_16BF}
_ORDER_COL = 1
_FLAGS = ("weight_t", "x_t", "y_t", "col")  # Layout's boolean fields, in name order


@dataclass(frozen=True)
class Layout:
    """How the product is posed. sparse 'A': y^T = W @ x^T; 'B': y = x @ W^T.

    weight_t, x_t, y_t: that tensor is stored transposed and contiguous (W^T (in, out), x^T (in, tokens),
    y^T (out, tokens)). col: describe the stored operands as column-major (same bytes, other kernels may run).
    """

    sparse: str = "A"
    weight_t: bool = False
    x_t: bool = False
    y_t: bool = True
    col: bool = False

    def name(self) -> str:
        flags = [f for f in _FLAGS if getattr(self, f)]
        return f"sparse{self.sparse}" + "".join("+" + f for f in flags)

    @staticmethod
    def every() -> list["Layout"]:
        """All 32 ways to pose the product (2 roles x 2^4 flags)."""
        return [Layout(s, *flags) for s in "AB" for flags in itertools.product((False, True), repeat=4)]

    @staticmethod
    def parse(text: str) -> "Layout":
        head, *flags = text.split("+")
        if head not in ("sparseA", "sparseB") or set(flags) - set(_FLAGS):
            raise ValueError(f"not a layout name: {text!r}")
        return Layout(sparse=head.removeprefix("sparse"), **{f: f in flags for f in _FLAGS})



def descriptors(layout: Layout, out_f: int, in_f: int, tokens: int):
    """(A, B, C) as (rows, cols, ld, order, op) for cuSPARSELt's D = op(A) @ op(B) computing y = x @ W^T."""
    if layout.sparse == "A":  # y^T (out, tokens) = W (out, in) @ x^T (in, tokens)
        a = _operand(out_f, in_f, layout.weight_t, layout.col)
        b = _operand(in_f, tokens, not layout.x_t, layout.col)
        c_rows, c_cols, c_t = out_f, tokens, not layout.y_t
    elif layout.sparse == "B":  # y (tokens, out) = x (tokens, in) @ W^T (in, out)
        a = _operand(tokens, in_f, layout.x_t, layout.col)
        b = _operand(in_f, out_f, not layout.weight_t, layout.col)
        c_rows, c_cols, c_t = tokens, out_f, layout.y_t
    else:
        raise ValueError(f"layout.sparse must be 'A' or 'B', not {layout.sparse!r}")
    return a, b, _operand(c_rows, c_cols, c_t, col=c_t)  # the output takes no transpose op


TORCH_LAYOUT = Layout()  # torch._cslt_sparse_mm's: W @ x^T into (out, tokens)


# The three fastest of the 32 layouts on the H100 for a LLaMA-7B MLP shape at 2048 and 8192 tokens
# (benchmarks/kernels/cslt_layouts.py). All write (out, tokens): every layout writing (tokens, out) ran 1.5-3x slower.
DEFAULT_LAYOUTS = "sparseA+y_t,sparseB+y_t,sparseA+y_t+col"


def parse_layouts(text: str) -> list[Layout]:
    """'torch' (torch's layout only), 'natural' (the 16 that take activations as they come, (tokens, in)), 'all'
    (the 32), or comma-separated Layout names such as DEFAULT_LAYOUTS."""
    if text == "torch":
        return [TORCH_LAYOUT]
    if text == "all":
        return Layout.every()
    if text == "natural":
        return [layout for layout in Layout.every() if not layout.x_t]
    try:
        layouts = [Layout.parse(name) for name in text.split(",") if name]
    except ValueError:
        layouts = []
    if not layouts:
        raise ValueError(f"unknown cuSPARSELt layout list {text!r} (torch, natural, or names like sparseA+y_t)")
    return layouts


def stored_input(x: torch.Tensor, layout: Layout) -> torch.Tensor:
    """x (tokens, in) as the layout's product takes it: transposed when x_t, contiguous, and padded with zero
    rows to a multiple of 16 tokens (cuSPARSELt refused other counts, "operation not supported", measured at 1
    and 333)."""
    pad = -x.shape[0] % 16
    if pad:
        x = torch.nn.functional.pad(x, (0, 0, 0, pad))
    return x.t().contiguous() if layout.x_t else x.contiguous()


def token_output(y: torch.Tensor, layout: Layout, tokens: int) -> torch.Tensor:
    """A product's output as stored by the layout -> its (tokens, out) values (a transposed view for y_t),
    the padding rows of `stored_input` dropped."""
    y = y.t() if layout.y_t else y
    return y[:tokens] if y.shape[0] != tokens else y


def _operand(rows: int, cols: int, stored_t: bool, col: bool):
    """(rows, cols, ld, order, op) describing a logical (rows, cols) operand as it lies in memory.

    stored_t: memory holds the contiguous (cols, rows) transpose. col: describe the bytes as column-major.
    """
    if not stored_t:
        return (cols, rows, cols, _ORDER_COL, _OP_T) if col else (rows, cols, cols, _ORDER_ROW, _OP_N)
    return (rows, cols, rows, _ORDER_COL, _OP_N) if col else (cols, rows, rows, _ORDER_ROW, _OP_T)


class _Opaque:
    """A 512-byte, 16-aligned opaque cuSPARSELt struct kept alive by this object."""

    def __init__(self):
        self._buf = ctypes.create_string_buffer(512 + 16)
        addr = ctypes.addressof(self._buf)
        self.ptr = ctypes.c_void_p(addr + (-addr % 16))


LIBRARY_ENV = "WANDAPP_CUSPARSELT"  # path of another libcusparseLt.so to use instead of torch's


def library_dirs() -> list[str]:
    """The installed packages' own folders that may hold libcusparseLt: torch's lib/ and the nvidia-cusparselt
    wheel beside torch (or in this interpreter's site-packages). Never sys.path at large: an empty entry there is
    the current directory, and a library found there would run its code in this process."""
    torch_dir = os.path.dirname(os.path.abspath(torch.__file__))
    site_dirs = [os.path.dirname(torch_dir)]
    try:
        import site

        site_dirs += [*site.getsitepackages(), site.getusersitepackages()]
    except AttributeError:  # some embedded interpreters lack site.getsitepackages
        pass
    dirs = [os.path.join(torch_dir, "lib")] + [os.path.join(d, "nvidia", "cusparselt", "lib") for d in site_dirs]
    return list(dict.fromkeys(d for d in dirs if os.path.isabs(d) and os.path.isdir(d)))


def _loaded_library() -> str | None:
    """The libcusparseLt that torch already mapped into this process, by its full path (Linux)."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split(maxsplit=5)[-1].strip()
                if os.path.basename(path).startswith("libcusparseLt.so") and os.path.isabs(path):
                    return path
    except OSError:
        pass
    return None


def _load_library() -> ctypes.CDLL:
    """From an explicit path ($WANDAPP_CUSPARSELT), the copy torch loaded, or the installed packages' folders."""
    override = os.environ.get(LIBRARY_ENV)
    if override:
        if not os.path.isabs(override) or not os.path.isfile(override):
            raise OSError(f"{LIBRARY_ENV}={override}: no such file (give an absolute path)")
        return ctypes.CDLL(override)  # loaded beside torch's copy; its symbols stay local to this handle
    loaded = _loaded_library()
    if loaded:
        return ctypes.CDLL(loaded)  # the same handle torch holds
    for folder in library_dirs():
        hits = sorted(glob.glob(os.path.join(glob.escape(folder), "libcusparseLt.so*")))
        if hits:
            return ctypes.CDLL(hits[0])
    raise OSError(f"libcusparseLt.so not found in {', '.join(library_dirs()) or 'torch or nvidia-cusparselt'}; set "
                  f"{LIBRARY_ENV} to its absolute path")


class CusparseLt:
    """One cuSPARSELt handle on one device, with a cache of matmul plans."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.lib = _load_library()
        self.lib.cusparseLtGetErrorString.restype = ctypes.c_char_p
        self.handle = _Opaque()
        with torch.cuda.device(self.device):
            self._check(self.lib.cusparseLtInit(self.handle.ptr), "cusparseLtInit")
        version = ctypes.c_int()
        self._check(self.lib.cusparseLtGetVersion(self.handle.ptr, ctypes.byref(version)), "GetVersion")
        self.version = version.value  # major * 1000000 + minor * 100 + patch: 800 is 0.8.0, 1000 is 0.10.0
        self._plans: dict[tuple, _Plan] = {}

    def _check(self, status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"{what} failed: {self.lib.cusparseLtGetErrorString(status).decode()} ({status})")

    def plan(self, out_f: int, in_f: int, tokens: int, dtype: torch.dtype, alg_id: int = 0, split_k: int = 1,
             layout: Layout = TORCH_LAYOUT):
        key = (out_f, in_f, tokens, dtype, alg_id, split_k, layout)
        if key not in self._plans:
            self._plans[key] = _Plan(self, out_f, in_f, tokens, dtype, alg_id, split_k, layout)
        return self._plans[key]

    def compress(self, weight: torch.Tensor, layout: Layout = TORCH_LAYOUT) -> torch.Tensor:
        """The 2:4 weight (out, in) in cuSPARSELt's compressed form (values + metadata, about 9/16 of the bytes)."""
        out_f, in_f = weight.shape
        plan = self.plan(out_f, in_f, 16, weight.dtype, layout=layout)
        size, buf_size = ctypes.c_size_t(), ctypes.c_size_t()
        self._check(self.lib.cusparseLtSpMMACompressedSize(self.handle.ptr, plan.plan.ptr, ctypes.byref(size),
                                                           ctypes.byref(buf_size)), "CompressedSize")
        compressed = torch.empty(size.value, dtype=torch.uint8, device=weight.device)
        buffer = torch.empty(max(buf_size.value, 1), dtype=torch.uint8, device=weight.device)
        stored = (weight.t() if layout.weight_t else weight).contiguous()
        stream = ctypes.c_void_p(torch.cuda.current_stream(weight.device).cuda_stream)
        self._check(self.lib.cusparseLtSpMMACompress(self.handle.ptr, plan.plan.ptr, ctypes.c_void_p(stored.data_ptr()),
                                                     ctypes.c_void_p(compressed.data_ptr()),
                                                     ctypes.c_void_p(buffer.data_ptr()), stream), "Compress")
        torch.cuda.current_stream(weight.device).synchronize()  # `buffer` and `stored` are freed on return
        return compressed

    def linear(self, compressed: torch.Tensor, x: torch.Tensor, out_f: int, alg_id: int = 0, split_k: int = 1,
               layout: Layout = TORCH_LAYOUT):
        """x (tokens, in) -> y (tokens, out); a transposed view when the layout stores y^T."""
        stored = stored_input(x, layout)
        padded = stored.shape[1] if layout.x_t else stored.shape[0]
        y = self.plan(out_f, x.shape[1], padded, x.dtype, alg_id, split_k, layout).run(compressed, stored)
        return token_output(y, layout, x.shape[0])

    def max_alg_id(self, out_f: int, in_f: int, tokens: int, dtype: torch.dtype, layout: Layout = TORCH_LAYOUT) -> int:
        return self.plan(out_f, in_f, tokens, dtype, layout=layout).max_alg_id


class _Plan:
    def __init__(self, lt: CusparseLt, out_f, in_f, tokens, dtype, alg_id, split_k, layout: Layout):
        lib, h = lt.lib, lt.handle.ptr
        self.lt, self.out_f, self.tokens, self.dtype, self.layout = lt, out_f, tokens, dtype, layout
        value = _DTYPES[dtype]
        self.a, self.b, self.c = _Opaque(), _Opaque(), _Opaque()
        self.matmul, self.alg, self.plan = _Opaque(), _Opaque(), _Opaque()
        i64, u32 = ctypes.c_int64, ctypes.c_uint32
        a, b, c = descriptors(layout, out_f, in_f, tokens)
        for opaque, (rows, cols, ld, order, _), role in ((self.a, a, "A"), (self.b, b, "B"), (self.c, c, "C")):
            shape = (h, opaque.ptr, i64(rows), i64(cols), i64(ld), u32(16), value, order)
            if role == layout.sparse:
                lt._check(lib.cusparseLtStructuredDescriptorInit(*shape, _SPARSITY_50),
                          f"StructuredDescriptorInit({role})")
            else:
                lt._check(lib.cusparseLtDenseDescriptorInit(*shape), f"DenseDescriptorInit({role})")
        lt._check(lib.cusparseLtMatmulDescriptorInit(h, self.matmul.ptr, a[4], b[4], self.a.ptr, self.b.ptr,
                                                     self.c.ptr, self.c.ptr, _COMPUTE_32F), "MatmulDescriptorInit")
        lt._check(lib.cusparseLtMatmulAlgSelectionInit(h, self.alg.ptr, self.matmul.ptr, 0), "AlgSelectionInit")
        self.max_alg_id = self.alg_attribute(_ALG_CONFIG_MAX_ID)
        for attr, val in ((_ALG_CONFIG_ID, alg_id), (_SPLIT_K, split_k)):
            v = ctypes.c_int(val)
            lt._check(lib.cusparseLtMatmulAlgSetAttribute(h, self.alg.ptr, attr, ctypes.byref(v), ctypes.c_size_t(4)),
                      f"AlgSetAttribute({attr}={val})")
        lt._check(lib.cusparseLtMatmulPlanInit(h, self.plan.ptr, self.matmul.ptr, self.alg.ptr), "PlanInit")
        ws = ctypes.c_size_t()
        lt._check(lib.cusparseLtMatmulGetWorkspace(h, self.plan.ptr, ctypes.byref(ws)), "GetWorkspace")
        self.workspace = torch.empty(max(ws.value, 1), dtype=torch.uint8, device=lt.device)
        self.alpha, self.beta = ctypes.c_float(1.0), ctypes.c_float(0.0)

    def alg_attribute(self, attr: int) -> int:
        v = ctypes.c_int()
        self.lt._check(self.lt.lib.cusparseLtMatmulAlgGetAttribute(self.lt.handle.ptr, self.alg.ptr, attr,
                                                                   ctypes.byref(v), ctypes.c_size_t(4)),
                       f"AlgGetAttribute({attr})")
        return v.value

    def run(self, compressed: torch.Tensor, x_stored: torch.Tensor) -> torch.Tensor:
        """x as stored ((tokens, in), or (in, tokens) with x_t) -> y as stored ((tokens, out), or (out, tokens))."""
        shape = (self.out_f, self.tokens) if self.layout.y_t else (self.tokens, self.out_f)
        out = torch.empty(shape, dtype=self.dtype, device=x_stored.device)
        w, x = ctypes.c_void_p(compressed.data_ptr()), ctypes.c_void_p(x_stored.data_ptr())
        a, b = (w, x) if self.layout.sparse == "A" else (x, w)
        stream = ctypes.c_void_p(torch.cuda.current_stream(x_stored.device).cuda_stream)
        self.lt._check(self.lt.lib.cusparseLtMatmul(
            self.lt.handle.ptr, self.plan.ptr, ctypes.byref(self.alpha), a, b, ctypes.byref(self.beta),
            ctypes.c_void_p(out.data_ptr()), ctypes.c_void_p(out.data_ptr()),
            ctypes.c_void_p(self.workspace.data_ptr()), ctypes.byref(stream), ctypes.c_int32(1)), "Matmul")
        return out
