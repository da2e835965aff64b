"""Experiment: the lop3 layout's batch 1-8 kernel with lane-private ``cp.async`` rings written in
inline PTX (no CTA barrier, no mbarrier), with split-K.

``lop3_gluon.py``'s cp.async kernel staged each lane's own 16-byte pieces through shared memory too,
but through Gluon's copy ops: its shared-memory analysis cannot see that a lane reads back only
what it copied, so it put a CTA barrier between consecutive copies (and it had no split-K, so
the mid shapes ran on 64-256 warps). Here the copies, the ``wait_group`` and the reads back are
inline PTX on the kernel's shared window (``global_smem``, reserved by one Gluon allocation the
kernel checks sits at offset 0): every thread copies group G's code words (16 / 32 bytes),
activations (64 bytes, lanes of real batch rows only; ``XS=0``: plain loads one group ahead
instead) and scales (4 bytes) into slot G % STAGES of its own regions, waits on its own copy
groups and reads them back, so the only ordering a thread needs is its own program order.

    PYTHONPATH=<Triton 3.6>:src python benchmarks/experiments/lop3_async.py --sass       # offline
    python benchmarks/experiments/lop3_async.py --out DIR [--tag T]                       # GPU

Symmetric zero (the benchmark's case) only, like the other Gluon kernels.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import lop3_gluon as LG  # noqa: E402  (group math, lanes, split-K finish, compare)
import lop3_layout as L  # noqa: E402

gluon, gl = LG.gluon, getattr(LG, "gl", None)
triton = L.triton


@triton.constexpr_function
def regions(bits, stages, nthreads, xbytes, tpw=1):
    """Byte offsets in the kernel's one shared allocation: the code ring [stage][tile][chunk][thread]
    16 bytes at 0, the scale ring [stage][tile][thread] 4 bytes, the activation block (xbytes); and
    the allocation's size in int32 words (a power of two, as Gluon's allocations must be). ``tpw``:
    row tiles a warp decodes (each its own codes and scales)."""
    bits, stages, nthreads, xbytes, tpw = int(bits), int(stages), int(nthreads), int(xbytes), int(tpw)
    soff = stages * tpw * (bits // 2) * nthreads * 16
    xoff = soff + stages * tpw * nthreads * 4
    return soff, xoff, 1 << max(0, (xoff + xbytes - 1) // 4).bit_length()


@triton.constexpr_function
def _issue_asm(bits, stages, nthreads, slot, tpw=1):
    """Copy one group into slot ``slot`` of this thread's rings: $4 the code address, $8 the scale
    address (int64, element 0 of each lane's four), $12 whether the group is real (else no code is
    copied and the scale slot is zero-filled; the group is still committed so that the wait counts
    stay exact), $16 / $17 the
    thread's ring bases (16 / 4 bytes a thread: elements 0 and 1 of the pack :func:`_bases`
    makes). The code chunks of a lane are 512 bytes apart (the chunk-major 4-bit order run() makes).
    ``tpw`` 2: $20 / $24 the second row tile's code and scale addresses. $0-3 a dummy result."""
    bits, stages, nthreads, slot, tpw = int(bits), int(stages), int(nthreads), int(slot), int(tpw)
    ch = bits // 2
    soff, _, _ = regions(bits, stages, nthreads, 0, tpw)
    t = ["{", ".reg .u32 sz;", ".reg .pred v;", "setp.ne.s32 v, $12, 0;", "selp.u32 sz, 4, 0, v;"]
    for u in range(tpw):
        qa = "$20" if u else "$4"
        sa = "$24" if u else "$8"
        for j in range(ch):
            t.append(f"@v cp.async.cg.shared.global [$16+{((slot * tpw + u) * ch + j) * nthreads * 16}], "
                     f"[{qa}+{512 * j}], 16;")
        # the scale is copied for every group, zeros past g1 (so a padded group adds s * 0 = 0)
        t.append(f"cp.async.ca.shared.global [$17+{soff + (slot * tpw + u) * nthreads * 4}], [{sa}], 4, sz;")
    t += ["cp.async.commit_group;", "mov.u32 $0, 0;", "mov.u32 $1, 0;", "mov.u32 $2, 0;", "mov.u32 $3, 0;", "}"]
    return "\n".join(t)


if gluon is not None:
    # the ring's bases, waits and reads back, and the activation block, as the library's kernel has them
    from matgptq.kernels.lop3_kernel import read16 as _rd  # noqa: F401
    from matgptq.kernels.lop3_kernel import read_scales as _rd_s  # noqa: F401
    from matgptq.kernels.lop3_kernel import ring_bases as _bases  # noqa: F401
    from matgptq.kernels.lop3_kernel import smem_base as _smem  # noqa: F401
    from matgptq.kernels.lop3_kernel import wait_copies as _wait  # noqa: F401
    from matgptq.kernels.lop3_kernel import x_block as _x_block  # noqa: F401

    @gluon.jit
    def _issue(Q, S, qo, so, G, g1, SP, bases, BLK: gl.constexpr, BITS: gl.constexpr, STAGES: gl.constexpr,
               NT: gl.constexpr, SLOT: gl.constexpr, TPW: gl.constexpr = 1, qd=0, sd=0):
        """Copy group G's codes and scales (nothing when G >= g1) into ring slot SLOT; TPW 2: also
        those of the row tile qd code words / sd scale rows further on."""
        Gc = gl.minimum(G, g1 - 1)
        qa = (Q + qo + Gc * BLK).to(gl.int64)
        sa = (S + so + Gc * SP).to(gl.int64)
        ok = (so * 0 + G < g1).to(gl.int32)
        if TPW == 2:
            r = gl.inline_asm_elementwise(_issue_asm(BITS, STAGES, NT, SLOT, TPW), "=r,=r,=r,=r" + ",l" * 8 + ",r" * 8
                                          + ",l" * 8, [qa, sa, ok, bases, qa + qd * 4, sa + sd * 2], dtype=gl.int32,
                                          is_pure=False, pack=4)
        else:
            r = gl.inline_asm_elementwise(_issue_asm(BITS, STAGES, NT, SLOT, TPW), "=r,=r,=r,=r" + ",l" * 8 + ",r" * 8,
                                          [qa, sa, ok, bases], dtype=gl.int32, is_pure=False, pack=4)
        return r

    @gluon.jit
    def _math(w0, w1, x0, x1, x2, x3, s, acc, q64, q16, q4, BITS: gl.constexpr, ZCK: gl.constexpr,
              ONE_ROW: gl.constexpr, DIAG: gl.constexpr):
        """The group math (skipped under DIAG bit 0)."""
        if DIAG % 2 == 1:
            r = acc
        else:
            r = LG._group_math(w0, w1, x0, x1, x2, x3, s, acc, q64, q16, q4, BITS, ZCK, ONE_ROW)
        return r

    @gluon.jit
    def _offsets(x0, x1, x2, x3, q64, q16, q4, BITS: gl.constexpr):
        """The group's offset mma (lop3_gluon._group_math's first half): sum x and sum offset * x."""
        p = LG._off2(LG._quad(0, BITS, q64, q16, q4), LG._quad(1, BITS, q64, q16, q4), x0, x0.to(gl.float32), True)
        p = LG._off2(LG._quad(2, BITS, q64, q16, q4), LG._quad(3, BITS, q64, q16, q4), x1, p, False)
        p = LG._off2(LG._quad(4, BITS, q64, q16, q4), LG._quad(5, BITS, q64, q16, q4), x2, p, False)
        return LG._off2(LG._quad(6, BITS, q64, q16, q4), LG._quad(7, BITS, q64, q16, q4), x3, p, False)

    @gluon.jit
    def _st4(addr, v, ok):
        """Store this thread's four fp32 at addr (element 0's address) where ok."""
        return gl.inline_asm_elementwise("{ .reg .pred p; setp.ne.s32 p, $12, 0; @p st.shared.v4.f32 [$4], {$8, $9, "
                                         "$10, $11}; mov.u32 $0, 0; mov.u32 $1, 0; mov.u32 $2, 0; mov.u32 $3, 0; }",
                                         "=r,=r,=r,=r" + ",r" * 4 + ",f" * 4 + ",r" * 4, [addr, v, ok],
                                         dtype=gl.int32, is_pure=False, pack=4)

    @gluon.jit
    def _math_p(w0, w1, x0, x1, x2, x3, s, acc, p, BITS: gl.constexpr, ZCK: gl.constexpr, ONE_ROW: gl.constexpr,
                DIAG: gl.constexpr, CHAINS: gl.constexpr):
        """The group math with the offset sums p given (XBLK == 2); skipped under DIAG bit 0. CHAINS 2:
        steps 0-3 and 4-7 into two accumulators (two 4-mma chains instead of one of 8), summed."""
        if DIAG % 2 == 1:
            r = acc
        else:
            d = LG._code2(w0, x0, acc, BITS, 0, True)
            d = LG._code2(w0, x1, d, BITS, 2, False)
            if CHAINS == 2:
                d2 = LG._code2(w1, x2, acc, BITS, 4, True)
                d = d + LG._code2(w1, x3, d2, BITS, 6, False)
            else:
                d = LG._code2(w1, x2, d, BITS, 4, False)
                d = LG._code2(w1, x3, d, BITS, 6, False)
            r = gl.inline_asm_elementwise(L._end_asm(ZCK, ONE_ROW), "=f,=f,=f,=f" + ",f" * 8 + ",r,r" + ",f" * 4,
                                          [d, p, s, acc], dtype=gl.float32, is_pure=True, pack=4)
        return r

    @gluon.jit
    def _step(X, Q, S, qo, xo, xm, so, G, g1, gc, SP, bases, xg, pg, xs, acc, q64, q16, q4, BLK: gl.constexpr,
              BITS: gl.constexpr, ZCK: gl.constexpr, ONE_ROW: gl.constexpr, STAGES: gl.constexpr, NT: gl.constexpr,
              CH: gl.constexpr, XR: gl.constexpr, XBLK: gl.constexpr, DIAG: gl.constexpr, CHAINS: gl.constexpr,
              SOFF: gl.constexpr, i: gl.constexpr):
        """Group G from ring slot i: wait for it, read it back, refill the slot of group G - 1 with
        group G + STAGES - 1, decode."""
        base = bases + _wait(STAGES - 2, bases)
        w0 = _rd(base, i * CH * NT * 16)
        w1 = w0
        if BITS == 4:
            w1 = _rd(base, (i * CH + 1) * NT * 16)
        if XBLK:
            x0 = _rd(xg, i * XR * 256)
            x1 = _rd(xg, i * XR * 256 + 16)
            x2 = _rd(xg, i * XR * 256 + 32)
            x3 = _rd(xg, i * XR * 256 + 48)
        else:
            x0, x1, x2, x3 = xs
            xs = LG._gload_x(X, xo, xm, gl.minimum(G + 1, g1 - 1))
        s = _rd_s(base, SOFF + i * NT * 4)
        _issue(Q, S, qo, so, G + STAGES - 1, gc, SP, bases, BLK, BITS, STAGES, NT, (i + STAGES - 1) % STAGES)
        if XBLK == 2:
            pv = _rd(pg, i * 512).to(gl.float32, bitcast=True)
            acc = _math_p(w0, w1, x0, x1, x2, x3, s, acc, pv, BITS, ZCK, ONE_ROW, DIAG, CHAINS)
        else:
            acc = _math(w0, w1, x0, x1, x2, x3, s, acc, q64, q16, q4, BITS, ZCK, ONE_ROW, DIAG)
        return acc, xs

    @gluon.jit
    def _step2(Q, S, qo, qd, so, sd, G, gc, SP, bases, xg, acc0, acc1, q64, q16, q4, BLK: gl.constexpr,
               BITS: gl.constexpr, ZCK: gl.constexpr, ONE_ROW: gl.constexpr, STAGES: gl.constexpr, NT: gl.constexpr,
               CH: gl.constexpr, XR: gl.constexpr, DIAG: gl.constexpr, SOFF: gl.constexpr, i: gl.constexpr):
        """TPW 2 (XBLK 1): group G of two row tiles from ring slot i; the activation fragments and the
        offset mma are the same for both tiles and taken once."""
        base = bases + _wait(STAGES - 2, bases)
        o: gl.constexpr = i * 2 * CH * NT * 16
        w00 = _rd(base, o)
        w10 = _rd(base, o + CH * NT * 16)
        w01 = w00
        w11 = w10
        if BITS == 4:
            w01 = _rd(base, o + NT * 16)
            w11 = _rd(base, o + (CH + 1) * NT * 16)
        x0 = _rd(xg, i * XR * 256)
        x1 = _rd(xg, i * XR * 256 + 16)
        x2 = _rd(xg, i * XR * 256 + 32)
        x3 = _rd(xg, i * XR * 256 + 48)
        s0 = _rd_s(base, SOFF + i * 2 * NT * 4)
        s1 = _rd_s(base, SOFF + (i * 2 + 1) * NT * 4)
        _issue(Q, S, qo, so, G + STAGES - 1, gc, SP, bases, BLK, BITS, STAGES, NT, (i + STAGES - 1) % STAGES, 2, qd,
               sd)
        if DIAG % 2 == 0:
            p = _offsets(x0, x1, x2, x3, q64, q16, q4, BITS)
            acc0 = _math_p(w00, w01, x0, x1, x2, x3, s0, acc0, p, BITS, ZCK, ONE_ROW, 0, 1)
            acc1 = _math_p(w10, w11, x0, x1, x2, x3, s1, acc1, p, BITS, ZCK, ONE_ROW, 0, 1)
        return acc0, acc1

    @gluon.jit
    def alop3_kernel(X, stride_xm, Q, S, AQ, OUT, stride_om, WS, CNT, M, N, SP, NG, GPS, SPLIT_K,
                     NW: gl.constexpr, BITS: gl.constexpr, ZCK: gl.constexpr, ONE_ROW: gl.constexpr,
                     STAGES: gl.constexpr, XBLK: gl.constexpr, GMAX: gl.constexpr, XR: gl.constexpr,
                     SOFF: gl.constexpr, XOFF: gl.constexpr, WORDS: gl.constexpr,
                     DIAG: gl.constexpr = 0, CHAINS: gl.constexpr = 1, NOIF: gl.constexpr = 0,
                     TPW: gl.constexpr = 1):
        """NW warps, one row tile each, groups GPS * pid_k .. of the K axis; group G's codes and
        scales are copied STAGES - 1 groups before it is decoded. XBLK: the program's activations
        copied into shared memory once (GMAX >= GPS groups, XR >= M rows) and read from there;
        else loaded into registers one group ahead. XBLK == 2: also the offset mma (sum x, sum
        offset * x: the same for every row tile) once per group for the whole CTA, warp w taking
        groups w, w + NW, .., its fragments kept in shared memory after the activations. The loop is
        unrolled STAGES times, so every ring address is the thread's base plus a constant; NOIF: its
        groups are not tested one by one (the range is padded to a multiple of STAGES, GMAX covering
        it), so that ptxas may interleave consecutive groups. DIAG (timing only, wrong results): bit 0
        skips the group math, bit 1 the code and scale copies (the reads take what is there). TPW 2
        (XBLK 1, NOIF 0 only): each warp decodes row tiles w and w + NW of the program's 2 NW,
        reading the activation fragments and doing the offset mma once for both."""
        LY: gl.constexpr = gl.BlockedLayout([1, 4], [1, 32], [NW, 1], [1, 0])
        L1: gl.constexpr = gl.BlockedLayout([1], [32], [NW], [0])
        NT: gl.constexpr = 32 * NW
        CH: gl.constexpr = BITS // 2
        BLK: gl.constexpr = 64 * BITS
        # the window the asm addresses: one allocation (_check_window: at offset 0), kept alive by
        # a store at the start and one at the end (nothing reads them)
        res = gl.allocate_shared_memory(gl.int32, [WORDS], gl.SwizzledSharedLayout(1, 1, 1, [0]))
        z1 = gl.zeros([NT], gl.int32, L1)
        res.slice(0, NT).store(z1)
        gl.thread_barrier()  # that store lands before any thread's copies
        pid_n = gl.program_id(0)
        pid_k = gl.program_id(1)
        g, c, e, ta, xo, xm, so = LG._lanes(pid_n * TPW, M, stride_xm, NW, LY)
        qd = NW * NG * BLK  # TPW 2: the second tile's codes and scale rows this far on
        sd = NW * 16
        q64, q16, q4 = LG._quads(AQ, e, ta)
        qo = ta.to(gl.int64) * (NG * BLK) + (g * 4 + c) * 4 + e  # chunk-major codes: chunk j at + 128 j
        bases = _bases(e)
        g0 = pid_k * GPS
        g1 = gl.minimum(g0 + GPS, NG)
        gc = g1
        if DIAG & 2:
            gc = g0  # no group is copied
        if XBLK:
            _x_block(X, stride_xm, M, g0, g1, XOFF, GMAX, XR, NT, L1)
        for i in gl.static_range(STAGES - 1):
            _issue(Q, S, qo, so, g0 + i, gc, SP, bases, BLK, BITS, STAGES, NT, i, TPW, qd, sd)
        if XBLK:
            _wait(STAGES - 1, e)  # the activation block (the oldest group) has landed, for this thread
            gl.thread_barrier()  # and for every thread
            xl = _smem(e) + XOFF + gl.minimum(g, M - 1) * 256 + c * 64
            if XBLK == 2:
                POFF: gl.constexpr = XOFF + GMAX * XR * 256
                pl = _smem(e) + POFF + (g * 4 + c) * 16  # + 512 per group: the lane's 4 fp32
                for j in gl.static_range((GMAX + NW - 1) // NW):
                    gg = ta * 0 + (ta % NW) + NW * j  # this warp's group (relative to g0)
                    xg0 = xl + gg * (XR * 256)
                    p0 = _offsets(_rd(xg0, 0), _rd(xg0, 16), _rd(xg0, 32), _rd(xg0, 48), q64, q16, q4, BITS)
                    _st4(pl + gg * 512, p0, (gg < GMAX).to(gl.int32))
                gl.thread_barrier()
            xs = (e, e, e, e)  # unused
        else:
            xs = LG._gload_x(X, xo, xm, g0)
            xl = e  # unused
        if XBLK != 2:
            pl = e  # unused
        acc = gl.zeros([NW, 128], gl.float32, LY)
        acc1 = gl.zeros([NW, 128], gl.float32, LY)
        for G0 in range(g0, g1, STAGES):
            xg = xl + (G0 - g0) * (XR * 256)
            pg = pl + (G0 - g0) * 512
            for i in gl.static_range(STAGES):
                G = G0 + i
                if TPW == 2:
                    if G < g1:
                        acc, acc1 = _step2(Q, S, qo, qd, so, sd, G, gc, SP, bases, xg, acc, acc1, q64, q16, q4, BLK,
                                           BITS, ZCK, ONE_ROW, STAGES, NT, CH, XR, DIAG, SOFF, i)
                elif NOIF:  # every group of the padded range (past g1: zero activations and scales)
                    acc, xs = _step(X, Q, S, qo, xo, xm, so, G, g1, gc, SP, bases, xg, pg, xs, acc, q64, q16, q4, BLK,
                                    BITS, ZCK, ONE_ROW, STAGES, NT, CH, XR, XBLK, DIAG, CHAINS, SOFF, i)
                elif G < g1:
                    acc, xs = _step(X, Q, S, qo, xo, xm, so, G, g1, gc, SP, bases, xg, pg, xs, acc, q64, q16, q4, BLK,
                                    BITS, ZCK, ONE_ROW, STAGES, NT, CH, XR, XBLK, DIAG, CHAINS, SOFF, i)
        _wait(0, e)
        gl.thread_barrier()
        res.slice(0, NT).store(z1)
        orow = 16 * ta + 2 * g + e // 2
        ocol = 2 * c + e % 2
        LG._finish(acc, ocol, orow, M, N, OUT, stride_om, WS, CNT, pid_n * TPW, pid_k, SPLIT_K)
        if TPW == 2:
            LG._finish(acc1, ocol, orow + sd, M, N, OUT, stride_om, WS, CNT, pid_n * TPW + 1, pid_k, SPLIT_K)


def _pow2(v):
    return 1 << max(0, int(v) - 1).bit_length()


def _consts(bits, warps, stages, xblk, gps, m, noif=0, tpw=1):
    gmax, xr = _pow2(-(-gps // stages) * stages if noif else gps), _pow2(m)
    xbytes = (gmax * xr * 256 + (gmax * 512 if xblk == 2 else 0)) if xblk else 0
    assert tpw == 1 or (xblk == 1 and not noif), "TPW 2 is written for XBLK 1, NOIF 0"
    soff, xoff, words = regions(bits, stages, 32 * warps, xbytes, tpw)
    return dict(NW=warps, BITS=bits, STAGES=stages, XBLK=int(xblk), NOIF=int(noif), GMAX=gmax, XR=xr, SOFF=soff, XOFF=xoff,
                WORDS=words, TPW=int(tpw))


def chunk_major(lw):
    """4 bits: each lane's 32 bytes of a (tile, group) block as two 16-byte chunks 512 bytes apart
    (chunk j of lane L at word 128 j + 4 L), so that every 16-byte copy of a warp covers whole
    sectors; in place, once (the first call, before any graph capture), 2 bits: unchanged."""
    if lw.bits == 4 and not getattr(lw, "chunked", False):
        lw.q = lw.q.view(-1, 32, 2, 4).transpose(1, 2).contiguous().view(-1)
        lw.chunked = True
    return lw


def run(lw, x, out, warps=4, stages=4, split_k=1, ws=None, cnt=None, xblk=1, diag=0, chains=1, noif=0, tpw=1):
    """alop3_kernel; ``xblk``: 1 the program's activations through shared memory, 2 also the offset
    sums computed once per CTA, 0 activations in registers; ``tpw``: row tiles per warp."""
    chunk_major(lw)
    m = x.shape[0]
    ng = lw.k // 128
    gps = triton.cdiv(ng, split_k)
    split_k = triton.cdiv(ng, gps)
    if lw.n % (16 * warps * tpw):
        raise ValueError(f"{lw.n} rows do not split into programs of {warps} warps x {tpw} tiles of 16")
    grid = (lw.n // (16 * warps * tpw), split_k)
    if ws is None:
        ws, cnt = LG._split_buffers(lw, m, split_k, grid[0] * tpw, x.device)
    cst = _consts(lw.bits, warps, stages, xblk, gps, m, noif, tpw)
    k = alop3_kernel[grid](x.view(torch.int32), x.stride(0), lw.q, lw.s, lw.aq, out, out.stride(0), ws, cnt, m, lw.n,
                           lw.sp, ng, gps, split_k, ZCK=lw.zc, ONE_ROW=m == 1, DIAG=diag, CHAINS=chains,
                           num_warps=warps, **cst)
    _check_window(k)
    return out


def _check_window(k):
    """The library kernel's check: the asm addresses the window from offset 0."""
    from matgptq.kernels.lop3_kernel import check_window

    check_window(k)


def sass_counts(bits, warps, stages, xblk, gps=14, chains=1, noif=0, tpw=1):
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    fn = alop3_kernel
    names = fn.arg_names
    ptr = {"X": "*i32", "Q": "*i32", "S": "*fp16", "AQ": "*i32", "OUT": "*fp16", "WS": "*fp32", "CNT": "*i32"}
    cst = dict(ZCK=float(1 << (bits - 1)), ONE_ROW=True, DIAG=0, CHAINS=chains,
               **_consts(bits, warps, stages, xblk, gps, 1, noif, tpw))
    sig = {n: "constexpr" if n in cst else ptr.get(n, "i32") for n in names}
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in ("X", "stride_xm", "Q", "S", "AQ", "OUT",
                                                                    "stride_om", "N", "SP", "WS", "CNT")}
    src = GluonASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in cst.items()},
                         attrs=attrs)
    comp = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps))
    _check_window(comp)
    # the loop runs STAGES groups (16 mmas each, 8 when the offset mma is shared) per iteration
    return comp, L.per_weight(comp, tpw * stages * 16 * 128 / 32, mmas=(8 * tpw + (0 if xblk == 2 else 8)) * stages)


def _splits(ng):
    """The splits of 4 .. 28 that divide the group count (no idle groups)."""
    return [v for v in (4, 7, 8, 14, 16, 28) if ng % v == 0]


def scaling(args):
    """Time against K at a fixed grid (N rows, split SK): the intercept is what a launch costs
    before and after its groups (launch, prologue, split-K finish), the slope a group's cost; with
    DIAG 1 (no math), 2 (no code copies), 3 (neither) and a plain read of the same bytes."""
    import kernel_bench as kb

    n, sk, w, st = (int(v) for v in args.scaling.split(":"))
    rows = []
    for bits in (int(b) for b in args.bits.split(",")):
        for k in (1024, 2048, 4096, 8192, 14336):
            codes, s, z, _ = L.random_case(n, k, bits, 1, seed=bits, device="cuda", asym=False)
            lw0 = chunk_major(L.Lop3Weight(codes, s, z, bits, float(1 << (bits - 1))))
            lws = [lw0] + [lw0.clone() for _ in range(kb.copies_for(lw0.bytes_read()) - 1)]
            x = torch.randn(1, k, device="cuda", dtype=torch.float16)
            outs = [torch.empty(1, n, device="cuda", dtype=torch.float16) for _ in lws]
            ws, cnt = LG._split_buffers(lw0, 1, sk, n // 16, "cuda")
            row = dict(n=n, k=k, bits=bits, config=f"w{w}:st{st}:sk{sk}", read_us=round(kb.read_time(lw0.bytes_read()), 2))
            for diag in (0, 1, 2, 3):
                row[f"diag{diag}_us"] = round(kb.graph_time(
                    [lambda lw=lw, o=o: run(lw, x, o, w, st, sk, ws, cnt, args.scaling_xblk, diag,
                                                   tpw=args.scaling_tpw) for lw, o in zip(lws, outs)]), 2)
            rows.append(row)
            print(row, flush=True)
    if args.out:
        with open(os.path.join(args.out, f"lop3_async_scaling_{args.tag}.json"), "w") as f:
            json.dump(rows, f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sass", action="store_true")
    ap.add_argument("--shapes", default="4096x14336,14336x4096,8192x8192,16384x16384")
    ap.add_argument("--bits", default="2,4")
    ap.add_argument("--xblk", default="2,1,0", help="activations: a block in shared memory (1), with the offset "
                    "sums once per CTA (2), registers (0)")
    ap.add_argument("--stages", default="4,8")
    ap.add_argument("--scaling", default=None, metavar="N:SK:W:ST",
                    help="time against K (1024 .. 14336) for N rows at split SK, W warps, ST stages")
    ap.add_argument("--scaling-xblk", type=int, default=2, help="--scaling's activation mode (see --xblk)")
    ap.add_argument("--chains", default="1", help="XBLK 2: one 8-mma chain per group (1) or two of 4 (2)")
    ap.add_argument("--noif", default="0", help="1: the group loop padded to a multiple of STAGES, no test per group")
    ap.add_argument("--tpw", default="1", help="row tiles per warp (2: XBLK 1, NOIF 0 only)")
    ap.add_argument("--scaling-tpw", type=int, default=1, help="--scaling's row tiles per warp")
    ap.add_argument("--out", default=None)
    ap.add_argument("--tag", default="h200")
    args = ap.parse_args()
    stages = [int(v) for v in args.stages.split(",")]
    chains = [int(v) for v in args.chains.split(",")]
    modes = [(xb, ch, nf, tp) for xb in (int(v) for v in args.xblk.split(",")) for ch in (chains if xb == 2 else [1])
             for nf in (int(v) for v in args.noif.split(",")) for tp in (int(v) for v in args.tpw.split(","))
             if tp == 1 or (xb == 1 and not nf)]
    if args.sass:
        rows = []
        for xb, ch, nf, tp in modes:
            for bits in (int(b) for b in args.bits.split(",")):
                for st in stages:
                    _, (regs, n, pw, mix) = sass_counts(bits, 4, st, xb, gps=16, chains=ch, noif=nf, tpw=tp)
                    rows.append(dict(bits=bits, xblk=xb, chains=ch, noif=nf, tpw=tp, stages=st, registers=regs,
                                     loop=n, per_weight=round(pw, 3), mix=mix))
                    print(f"xblk{xb} chains{ch} noif{nf} tpw{tp} {bits}-bit stages {st}: {regs} registers, loop {n}, "
                          f"{pw:.2f} per weight  {mix}", flush=True)
        if args.out:
            with open(os.path.join(args.out, "lop3_async_sass_triton36.json"), "w") as f:
                json.dump(rows, f, indent=1)
        return
    if not torch.cuda.is_available():
        raise SystemExit("lop3_async.py: the GPU modes need CUDA; --sass runs without one")
    if args.scaling:
        return scaling(args)
    for xb, ch, nf, tp in modes:
        LG.compare(args, functools.partial(run, xblk=xb, chains=ch, noif=nf, tpw=tp), ((4, 4, 1), (4, 8, 4), (2, 4, 2)),
                   lambda n, ng: [(w, st, sk) for w in (2, 4) for st in stages for sk in _splits(ng)],
                   f"async_xblk{xb}" + (f"_chains{ch}" if ch > 1 else "") + ("_noif" if nf else "")
                   + (f"_tpw{tp}" if tp > 1 else ""))


if __name__ == "__main__":
    main()
