"""A transposed (column-major) matrix made contiguous through shared-memory tiles.

cuSPARSELt's fast layouts write y^T (out, tokens), and the model wants y (tokens, out). torch's
`.contiguous()` on that transposed view ran at about 0.45 TB/s on the H100 (0.075 ms for 4096 x 2048 fp16,
more than the sparse product saved; measured), so every sparse layer lost to dense. A tiled Triton copy reads
and writes along contiguous memory on both sides.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: plain .contiguous()
    triton = None

if triton is not None:

    @triton.jit
    def _transpose_copy(src, dst, M, N, s_m, s_n, BM: tl.constexpr, BN: tl.constexpr):
        # dst (M, N) row-major from src with element (m, n) at m * s_m + n * s_n, where s_m == 1.
        m = tl.program_id(0) * BM + tl.arange(0, BM)
        n = tl.program_id(1) * BN + tl.arange(0, BN)
        # Load as [n, m] so that m, contiguous in src, is the fast axis; store the transposed tile along n.
        tile = tl.load(src + n[:, None] * s_n + m[None, :] * s_m, mask=(n[:, None] < N) & (m[None, :] < M))
        tl.store(dst + m[:, None] * N + n[None, :], tl.trans(tile), mask=(m[:, None] < M) & (n[None, :] < N))


def contiguous(y: torch.Tensor) -> torch.Tensor:
    """y made contiguous; a column-major 2D CUDA matrix goes through the tiled copy, anything else .contiguous()."""
    if y.is_contiguous() or triton is None or not y.is_cuda or y.dim() != 2 or y.stride(0) != 1:
        return y.contiguous()
    M, N = y.shape
    out = torch.empty((M, N), dtype=y.dtype, device=y.device)
    grid = (triton.cdiv(M, 64), triton.cdiv(N, 64))
    _transpose_copy[grid](y, out, M, N, y.stride(0), y.stride(1), BM=64, BN=64, num_warps=4)
    return out
