"""cuSPARSELt called directly, with plans built once and cached.

torch._cslt_sparse_mm builds descriptors and a matmul plan on every call, then frees them; on the H100 with
torch 2.11 and cuSPARSELt 0.8 that host work cost 250-400 ms per call (measured), far above the kernel
itself. Here a plan is made once per (weight shape, token count, algorithm) and reused, so an eager call costs
microseconds and a CUDA graph captures in no time. Layout (as torch's default): D[out, tokens] = W[out, in] @ x^T.
"""

from __future__ import annotations

import ctypes
import glob
import os

import torch

_R_16F, _R_16BF = 2, 14  # cudaDataType
_ORDER_ROW = 2  # cusparseOrder_t (COL = 1)
_OP_N, _OP_T = 0, 1
_COMPUTE_32F = 2
_SPARSITY_50 = 0
_ALG_CONFIG_ID, _ALG_CONFIG_MAX_ID, _SPLIT_K = 0, 1, 3
_DTYPES = {torch.float16: _R_16F, torch.bfloat16: _R_16BF}


class _Opaque:
    """A 512-byte, 16-aligned opaque cuSPARSELt struct kept alive by this object."""

    def __init__(self):
        self._buf = ctypes.create_string_buffer(512 + 16)
        addr = ctypes.addressof(self._buf)
        self.ptr = ctypes.c_void_p(addr + (-addr % 16))


def _load_library() -> ctypes.CDLL:
    for name in ("libcusparseLt.so.0", "libcusparseLt.so"):
        try:
            return ctypes.CDLL(name)  # torch has usually loaded it already
        except OSError:
            pass
    roots = [os.path.dirname(torch.__file__), *[os.path.join(p, "nvidia") for p in __import__("sys").path]]
    for root in roots:
        hits = glob.glob(os.path.join(root, "**", "libcusparseLt.so*"), recursive=True)
        if hits:
            return ctypes.CDLL(hits[0])
    raise OSError("libcusparseLt.so not found")


class CusparseLt:
    """One cuSPARSELt handle on one device, with a cache of matmul plans."""

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.lib = _load_library()
        self.lib.cusparseLtGetErrorString.restype = ctypes.c_char_p
        self.handle = _Opaque()
        with torch.cuda.device(self.device):
            self._check(self.lib.cusparseLtInit(self.handle.ptr), "cusparseLtInit")
        self._plans: dict[tuple, _Plan] = {}

    def _check(self, status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"{what} failed: {self.lib.cusparseLtGetErrorString(status).decode()} ({status})")

    def plan(self, out_f: int, in_f: int, tokens: int, dtype: torch.dtype, alg_id: int = 0, split_k: int = 1):
        key = (out_f, in_f, tokens, dtype, alg_id, split_k)
        if key not in self._plans:
            self._plans[key] = _Plan(self, out_f, in_f, tokens, dtype, alg_id, split_k)
        return self._plans[key]

    def compress(self, weight: torch.Tensor) -> torch.Tensor:
        """The 2:4 weight (out, in) in cuSPARSELt's compressed form (values + metadata, about 9/16 of the bytes)."""
        out_f, in_f = weight.shape
        plan = self.plan(out_f, in_f, 16, weight.dtype)
        size, buf_size = ctypes.c_size_t(), ctypes.c_size_t()
        self._check(self.lib.cusparseLtSpMMACompressedSize(self.handle.ptr, plan.plan.ptr, ctypes.byref(size),
                                                           ctypes.byref(buf_size)), "CompressedSize")
        compressed = torch.empty(size.value, dtype=torch.uint8, device=weight.device)
        buffer = torch.empty(max(buf_size.value, 1), dtype=torch.uint8, device=weight.device)
        stream = ctypes.c_void_p(torch.cuda.current_stream(weight.device).cuda_stream)
        self._check(self.lib.cusparseLtSpMMACompress(self.handle.ptr, plan.plan.ptr,
                                                     ctypes.c_void_p(weight.contiguous().data_ptr()),
                                                     ctypes.c_void_p(compressed.data_ptr()),
                                                     ctypes.c_void_p(buffer.data_ptr()), stream), "Compress")
        torch.cuda.current_stream(weight.device).synchronize()  # `buffer` is freed on return
        return compressed

    def linear(self, compressed: torch.Tensor, x: torch.Tensor, out_f: int, alg_id: int = 0, split_k: int = 1):
        """x (tokens, in) contiguous -> (tokens, out) view of a (out, tokens) result.

        cuSPARSELt refuses a token count that is not a multiple of 16 ("operation not supported", measured
        at 1 and 333), so such an input is padded with zero rows and the extra columns are dropped.
        """
        tokens, in_f = x.shape
        pad = -tokens % 16
        if pad:
            x = torch.nn.functional.pad(x, (0, 0, 0, pad))
        out = self.plan(out_f, in_f, tokens + pad, x.dtype, alg_id, split_k).run(compressed, x)
        return (out[:, :tokens] if pad else out).t()

    def max_alg_id(self, out_f: int, in_f: int, tokens: int, dtype: torch.dtype) -> int:
        return self.plan(out_f, in_f, tokens, dtype).max_alg_id


class _Plan:
    def __init__(self, lt: CusparseLt, out_f, in_f, tokens, dtype, alg_id, split_k):
        lib, h = lt.lib, lt.handle.ptr
        self.lt, self.out_f, self.tokens, self.dtype = lt, out_f, tokens, dtype
        value = _DTYPES[dtype]
        self.a, self.b, self.c = _Opaque(), _Opaque(), _Opaque()
        self.matmul, self.alg, self.plan = _Opaque(), _Opaque(), _Opaque()
        i64, u32 = ctypes.c_int64, ctypes.c_uint32
        lt._check(lib.cusparseLtStructuredDescriptorInit(h, self.a.ptr, i64(out_f), i64(in_f), i64(in_f), u32(16),
                                                         value, _ORDER_ROW, _SPARSITY_50), "StructuredDescriptorInit")
        # B is x (tokens, in) row-major, used transposed; C/D are (out, tokens) row-major.
        lt._check(lib.cusparseLtDenseDescriptorInit(h, self.b.ptr, i64(tokens), i64(in_f), i64(in_f), u32(16), value,
                                                    _ORDER_ROW), "DenseDescriptorInit(B)")
        lt._check(lib.cusparseLtDenseDescriptorInit(h, self.c.ptr, i64(out_f), i64(tokens), i64(tokens), u32(16),
                                                    value, _ORDER_ROW), "DenseDescriptorInit(C)")
        lt._check(lib.cusparseLtMatmulDescriptorInit(h, self.matmul.ptr, _OP_N, _OP_T, self.a.ptr, self.b.ptr,
                                                     self.c.ptr, self.c.ptr, _COMPUTE_32F), "MatmulDescriptorInit")
        lt._check(lib.cusparseLtMatmulAlgSelectionInit(h, self.alg.ptr, self.matmul.ptr, 0), "AlgSelectionInit")
        max_id = ctypes.c_int()
        lt._check(lib.cusparseLtMatmulAlgGetAttribute(h, self.alg.ptr, _ALG_CONFIG_MAX_ID, ctypes.byref(max_id),
                                                      ctypes.c_size_t(4)), "AlgGetAttribute(MAX_ID)")
        self.max_alg_id = max_id.value
        for attr, val in ((_ALG_CONFIG_ID, alg_id), (_SPLIT_K, split_k)):
            v = ctypes.c_int(val)
            lt._check(lib.cusparseLtMatmulAlgSetAttribute(h, self.alg.ptr, attr, ctypes.byref(v), ctypes.c_size_t(4)),
                      f"AlgSetAttribute({attr}={val})")
        lt._check(lib.cusparseLtMatmulPlanInit(h, self.plan.ptr, self.matmul.ptr, self.alg.ptr), "PlanInit")
        ws = ctypes.c_size_t()
        lt._check(lib.cusparseLtMatmulGetWorkspace(h, self.plan.ptr, ctypes.byref(ws)), "GetWorkspace")
        self.workspace = torch.empty(max(ws.value, 1), dtype=torch.uint8, device=lt.device)
        self.alpha, self.beta = ctypes.c_float(1.0), ctypes.c_float(0.0)

    def run(self, compressed: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty(self.out_f, self.tokens, dtype=self.dtype, device=x.device)
        stream = ctypes.c_void_p(torch.cuda.current_stream(x.device).cuda_stream)
        self.lt._check(self.lt.lib.cusparseLtMatmul(
            self.lt.handle.ptr, self.plan.ptr, ctypes.byref(self.alpha), ctypes.c_void_p(compressed.data_ptr()),
            ctypes.c_void_p(x.data_ptr()), ctypes.byref(self.beta), ctypes.c_void_p(out.data_ptr()),
            ctypes.c_void_p(out.data_ptr()), ctypes.c_void_p(self.workspace.data_ptr()), ctypes.byref(stream),
            ctypes.c_int32(1)), "Matmul")
        return out
