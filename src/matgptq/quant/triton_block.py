"""Fused Triton kernel for the column-by-column work inside one lazy GPTQ block.

Rows are independent inside a block (they share only U), so each program owns BLOCK_R rows of
the block in registers and walks its columns: quantize with the rule's tables, write the code,
feed the scaled error into the remaining columns. Same arithmetic as ``gptq.block_torch``.
"""

from __future__ import annotations

import functools

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised on machines without triton
    triton = None


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    return triton is not None


if triton is not None:

    @triton.jit
    def _gptq_block_kernel(
        W, stride_wr, stride_wc,
        U, stride_ur, stride_uc,
        S, Z, stride_sr, stride_sc,
        BP, RECON,
        Q, stride_qr, stride_qc,
        E, stride_er, stride_ec,
        LOSS,
        R, NB,
        BLOCK_R: tl.constexpr, BK: tl.constexpr, MBITS: tl.constexpr, UNIFORM: tl.constexpr,
    ):
        pid = tl.program_id(0)
        rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
        cols = tl.arange(0, BK)
        rmask = rows < R
        cmask = cols < NB
        tile = tl.load(
            W + rows[:, None] * stride_wr + cols[None, :] * stride_wc,
            mask=rmask[:, None] & cmask[None, :], other=0.0,
        )
        loss = tl.zeros([BLOCK_R], dtype=tl.float32)
        maxq = (1 << MBITS) - 1
        for i in range(NB):
            sel = cols[None, :] == i
            w = tl.sum(tl.where(sel, tile, 0.0), axis=1)
            s = tl.load(S + rows * stride_sr + i * stride_sc, mask=rmask, other=1.0)
            z = tl.load(Z + rows * stride_sr + i * stride_sc, mask=rmask, other=0.0)
            x = tl.math.div_rn(w, s) + z
            if UNIFORM:  # breakpoints q + 1/2, ties down: ceil(x - 1/2) clamped
                q = tl.minimum(tl.maximum(tl.ceil(x - 0.5), 0.0), maxq * 1.0).to(tl.int32)
            else:  # q = #{breakpoints < x}, branch-free binary search over 2^M - 1 entries
                q = tl.zeros([BLOCK_R], dtype=tl.int32)
                for k in tl.static_range(MBITS):
                    step = 1 << (MBITS - 1 - k)
                    b = tl.load(BP + q + (step - 1))
                    q = tl.where(b < x, q + step, q)
            t = tl.load(RECON + q)
            diff = w - s * (t - z)
            d = tl.load(U + i * stride_ur + i * stride_uc)
            e = tl.math.div_rn(diff, d)
            urow = tl.load(U + i * stride_ur + cols * stride_uc, mask=cmask & (cols > i), other=0.0)
            tile = tile - e[:, None] * urow[None, :]
            tl.store(Q + rows * stride_qr + i * stride_qc, q.to(tl.uint8), mask=rmask)
            tl.store(E + rows * stride_er + i * stride_ec, e, mask=rmask)
            loss += e * e
        tl.atomic_add(LOSS, tl.sum(tl.where(rmask, loss, 0.0), axis=0))


def block_triton(w, u, s, z, bp, recon, rule, codes_out, loss):
    """Drop-in for ``gptq.block_torch`` on CUDA float32 tensors."""
    if w.dtype != torch.float32:
        from .gptq import block_torch

        return block_torch(w, u, s, z, bp, recon, rule, codes_out, loss)
    rows, n = w.shape
    err = torch.empty_like(w)
    s = s.contiguous()
    z = z.contiguous()
    loss32 = torch.zeros(1, device=w.device, dtype=torch.float32)
    bk = max(16, triton.next_power_of_2(n))
    block_r = 16 if bk <= 128 else 8
    grid = (triton.cdiv(rows, block_r),)
    _gptq_block_kernel[grid](
        w, w.stride(0), w.stride(1),
        u, u.stride(0), u.stride(1),
        s, z, s.stride(0), s.stride(1),
        bp, recon,
        codes_out, codes_out.stride(0), codes_out.stride(1),
        err, err.stride(0), err.stride(1),
        loss32,
        rows, n,
        BLOCK_R=block_r, BK=bk, MBITS=rule.master_bits, UNIFORM=rule.uniform,
        num_warps=4,
    )
    loss += loss32[0]
    return err
