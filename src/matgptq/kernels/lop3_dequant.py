"""Ŵ [N, K] from the ``lop3`` layout in one Triton launch (the large-batch path: dequantize, then
cuBLAS; also the interpreter's path). Each program writes 16·RT rows of one 128-column group,
reading each word once per element it holds (the words of a block stay in L1 / L2)."""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - machines without triton
    triton = None

RT = 4  # row tiles per program

if triton is not None:

    @triton.jit
    def lop3_dequant_kernel(Q, S, OUT, N, K, SP, NG, two_d, zb, BITS: tl.constexpr, RT: tl.constexpr):
        pid_t = tl.program_id(0)
        G = tl.program_id(1)
        NF: tl.constexpr = 16 // BITS
        BLK: tl.constexpr = 64 * BITS
        r = pid_t * (16 * RT) + tl.arange(0, 16 * RT)[:, None]  # rows
        j = tl.arange(0, 128)[None, :]  # columns of the group
        rr = r % 16
        lane = 4 * (rr // 2) + j // 32
        w32 = j % 32
        step = w32 // 4
        word = 128 * (step // NF) + 4 * lane + 2 * ((w32 // 2) % 2) + rr % 2
        shift = 16 * (w32 % 2) + BITS * (step % NF)
        mask = r < N
        w = tl.load(Q + (r // 16).to(tl.int64) * (NG * BLK) + G * BLK + word, mask=mask, other=0)
        code = (w >> shift) & ((1 << BITS) - 1)
        s = tl.load(S + G * SP + r, mask=mask, other=0.0).to(tl.float32)
        v = s * (code.to(tl.float32) * two_d - zb)
        tl.store(OUT + r.to(tl.int64) * K + G * 128 + j, v.to(OUT.dtype.element_ty), mask=mask)


def lop3_dequantize(words: torch.Tensor, scales: torch.Tensor, n: int, k: int, bits: int, two_d: float, zb: float,
                    dtype: torch.dtype, out: torch.Tensor | None = None) -> torch.Tensor:
    """s · (k · 2^d - z_b) as [N, K] ``dtype`` (``scales``: [groups, N + 16], lop3_pack.pad_scales)."""
    if out is None:
        out = torch.empty(n, k, dtype=dtype, device=words.device)
    grid = (-(-n // (16 * RT)), k // 128)
    lop3_dequant_kernel[grid](words, scales, out, n, k, scales.shape[1], k // 128, two_d, zb, BITS=bits, RT=RT,
                              num_warps=4)
    return out
