"""The ``lop3`` layout's batch 1-16 kernel (Gluon, CUDA only): y = x · Ŵᵀ for fp16 x.

Each warp decodes one row tile (16 rows); a program has NW warps on NW / KU tiles and a range of
GPS groups of the K axis (split-K: partial sums in a workspace, the last program of a tile adds
them up in order); with KU > 1 ("k parts") a tile's KU warps each take a consecutive part of the
program's range and their sums meet in shared memory. Every thread copies its own 16-byte pieces of group G's codes and its 4-byte scale pair
with inline-PTX ``cp.async`` into slot G % STAGES of a private ring in shared memory, STAGES - 1
groups ahead, waits on its own copy groups and reads back only what it copied, so no barrier is
needed in the loop (with PF, a launch's ``l2_prefetch``, each warp also prefetches the rest of its
groups into L2 at the start: its codes by one bulk prefetch, the scales a group a lane). The
program's activations are copied into shared memory once, at the start (one barrier), 288 bytes per batch row (16 bytes of padding after each half row, so that one
16-byte read phase of eight lanes, two batch rows of four, hits eight different bank quads at
batch > 1). Per group and warp: eight code mmas on the lop3-decoded pairs, eight offset mmas
on the activations (sum x, sum offset · x), and acc += s · (d - offsum - z · sum x) in fp32;
at batch 1 (OB) the offset mma runs once per block of eight groups instead (B column n: group
n) and each group takes its correction from the lane that holds it by a shuffle. Batches of
9-16 rows (HB) repeat the mmas for rows 8-15 on the same decoded pairs. 3 bits: each
thread also copies its 8 bytes of low bits into a third ring, and a pair takes a second lop3.

Symmetric grids only (one zero for the whole slice, a compile-time constant).
Shapes: N a multiple of 16 · NW / KU, K of 128; x rows 16-byte aligned.
"""

from __future__ import annotations

import os
import re

import torch

from . import lop3_asm as A

try:
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
except ImportError:  # pragma: no cover - Triton without Gluon (< 3.5) or no Triton
    gluon = None


def gluon_available() -> bool:
    return gluon is not None


if gluon is not None:
    # a CTA barrier: gl.thread_barrier in Triton 3.5-3.6, gl.barrier from 3.7
    cta_barrier = gl.thread_barrier if hasattr(gl, "thread_barrier") else gl.barrier

    @gluon.jit
    def code2(w, wb, xq, d, BITS: gl.constexpr, J0: gl.constexpr, FIRST: gl.constexpr):
        """Steps J0, J0 + 1 (lop3_asm.code_asm); 3 bits: wb holds the lane's two low-bit words."""
        if BITS == 3:
            if FIRST:
                d = gl.inline_asm_elementwise(A.code_asm(BITS, J0, True), "=f,=f,=f,=f" + ",r" * 12, [w, wb, xq],
                                              dtype=gl.float32, is_pure=True, pack=4)
            else:
                d = gl.inline_asm_elementwise(A.code_asm(BITS, J0, False), "=f,=f,=f,=f" + ",r" * 12 + ",f,f,f,f",
                                              [w, wb, xq, d], dtype=gl.float32, is_pure=True, pack=4)
        elif FIRST:
            d = gl.inline_asm_elementwise(A.code_asm(BITS, J0, True), "=f,=f,=f,=f" + ",r" * 8, [w, xq],
                                          dtype=gl.float32, is_pure=True, pack=4)
        else:
            d = gl.inline_asm_elementwise(A.code_asm(BITS, J0, False), "=f,=f,=f,=f" + ",r" * 8 + ",f,f,f,f",
                                          [w, xq, d], dtype=gl.float32, is_pure=True, pack=4)
        return d

    @gluon.jit
    def off2(qa, qb, xq, p, FIRST: gl.constexpr):
        if FIRST:
            p = gl.inline_asm_elementwise(A.off_asm(True), "=f,=f,=f,=f" + ",r" * 12, [qa, qb, xq],
                                          dtype=gl.float32, is_pure=True, pack=4)
        else:
            p = gl.inline_asm_elementwise(A.off_asm(False), "=f,=f,=f,=f" + ",r" * 12 + ",f,f,f,f",
                                          [qa, qb, xq, p], dtype=gl.float32, is_pure=True, pack=4)
        return p

    @gluon.jit
    def quad(j: gl.constexpr, BITS: gl.constexpr, q64, q16, q4):
        """The offset quad of step j (lop3_pack.P2: offsets 64, 16, 4 at p = 4, 6, 8; 3 bits: the
        table's 128, 32, 8 at P3 = P2 - 1)."""
        if BITS == 4:
            r = q64
        elif j == 4 or j == 7:
            r = q4
        elif j == 1 or j == 3 or j == 6:
            r = q16
        else:
            r = q64
        return r

    @gluon.jit
    def offsets(x0, x1, x2, x3, like, q64, q16, q4, BITS: gl.constexpr):
        """The offset mma of one group's activations x0..x3 (8 mmas): per B column, sum x (rows
        0-7) and the offset-weighted sum (rows 8-15)."""
        p = off2(quad(0, BITS, q64, q16, q4), quad(1, BITS, q64, q16, q4), x0, like, True)
        p = off2(quad(2, BITS, q64, q16, q4), quad(3, BITS, q64, q16, q4), x1, p, False)
        p = off2(quad(4, BITS, q64, q16, q4), quad(5, BITS, q64, q16, q4), x2, p, False)
        return off2(quad(6, BITS, q64, q16, q4), quad(7, BITS, q64, q16, q4), x3, p, False)

    @gluon.jit
    def group_math(w0, w1, wb, x0, x1, x2, x3, s, acc, q64, q16, q4, t, BITS: gl.constexpr, ZCK: gl.constexpr,
                   ONE_ROW: gl.constexpr, OB: gl.constexpr, NB: gl.constexpr):
        """One 128-column group of one batch half (x0..x3: its activations): the offset mma, the
        code mmas and the group's end. The second half's call repeats the decode's lop3s with the
        same operands; ptxas computes them once (the asm is plain PTX to it). OB (batch 1): no
        offset mma here; the group is column NB of its block's (corrections in t)."""
        p = t
        if not OB:  # the offset mma first, as the compiler schedules it best (benchmarks/lop3.py --sass)
            p = offsets(x0, x1, x2, x3, acc, q64, q16, q4, BITS)
        d = code2(w0, wb, x0, acc, BITS, 0, True)
        d = code2(w0, wb, x1, d, BITS, 2, False)
        d = code2(w1, wb, x2, d, BITS, 4, False)
        d = code2(w1, wb, x3, d, BITS, 6, False)
        if OB:
            r = gl.inline_asm_elementwise(A.end_block_asm(NB), "=f,=f,=f,=f" + ",f" * 8 + ",r,r" + ",f" * 4,
                                          [d, t, s, acc], dtype=gl.float32, is_pure=False, pack=4)
        else:
            r = gl.inline_asm_elementwise(A.end_asm(ZCK, ONE_ROW), "=f,=f,=f,=f" + ",f" * 8 + ",r,r" + ",f" * 4,
                                          [d, p, s, acc], dtype=gl.float32, is_pure=True, pack=4)
        return r

    @gluon.jit
    def lanes(pid_n, NW: gl.constexpr, TW: gl.constexpr, LY: gl.constexpr):
        """The [NW, 128] lane indices of a program's NW warps, TW row tiles, warp T on tile T % TW and
        part T // TW of the program's K range: lane group g, lane c, register e, the tiles, the
        scale offsets (rows 16 tile + 2g ..), the parts and the thread's slot in a [NW // TW][TW][32]
        array of 16-byte pieces with the part taken out (the reduction of the parts)."""
        T = gl.expand_dims(gl.arange(0, NW, layout=gl.SliceLayout(1, LY)), 1)
        E = gl.expand_dims(gl.arange(0, 128, layout=gl.SliceLayout(0, LY)), 0)
        g = E // 16
        c = E // 4 % 4
        e = E % 4
        ta = pid_n * TW + T % TW
        return g, c, e, ta, ta * 16 + 2 * g + e, T // TW, T % TW * 32 + E // 4

    @gluon.jit
    def quads(AQ, e, ta):
        """The offset mma's A quads {1, 64, 1, 64}, {1, 16, ..}, {1, 4, ..} (lop3_asm.offset_quads)."""
        return gl.load(AQ + e + ta * 0), gl.load(AQ + 4 + e + ta * 0), gl.load(AQ + 8 + e + ta * 0)

    @gluon.jit
    def _store(tot, ocol, orow, mask, OUT, stride_om, BIAS, HAS_BIAS: gl.constexpr, TWO_D: gl.constexpr):
        if TWO_D != 1.0:
            tot = tot * TWO_D
        if HAS_BIAS:
            tot += gl.load(BIAS + orow, mask=mask, other=0.0).to(gl.float32)
        gl.store(OUT + ocol * stride_om + orow, tot.to(gl.float16), mask=mask)

    @gluon.jit
    def _sum_partials(acc, ws, mask, M, N, SPLIT_K, OWN: gl.constexpr):
        """The split-K partials summed in split order, eight loads at a time; OWN: the last one is
        ``acc`` (this program's, in registers), not read back."""
        tot = gl.zeros_like(acc)
        P = SPLIT_K - OWN
        for k0 in range(0, P, 8):  # eight loads in flight, then their sums in order
            for j in gl.static_range(8):
                live = k0 + j < P
                v = gl.load(ws + (k0 + j) * M * N, mask=mask & live, other=0.0, cache_modifier=".cg")
                tot = gl.where(live, tot + v, tot)
        if OWN:
            tot += acc
        return tot

    @gluon.jit
    def wait_count(ptr, want):
        """Every thread: spin until the counter at ``ptr`` (a tensor of one address) reaches
        ``want``, by acquire loads at GPU scope; returns zeros that later loads add to their address,
        so that no compiler moves them above the wait."""
        return gl.inline_asm_elementwise(A.wait_count_asm(), "=r,=r,=r,=r,l,l,l,l,r,r,r,r", [ptr, want],
                                         dtype=gl.int32, is_pure=False, pack=4)

    @gluon.jit
    def _sum_store(acc, acc2, ws, ocol, orow, mask, mask2, M, N, OUT, stride_om, BIAS, SPLIT_K, OWN: gl.constexpr,
                   HAS_BIAS: gl.constexpr, TWO_D: gl.constexpr, HB: gl.constexpr):
        """The split-K sum (_sum_partials) of batch rows 0-7 and, with HB, 8-15, stored."""
        _store(_sum_partials(acc, ws, mask, M, N, SPLIT_K, OWN), ocol, orow, mask, OUT, stride_om, BIAS, HAS_BIAS,
               TWO_D)
        if HB:
            _store(_sum_partials(acc2, ws + 8 * N, mask2, M, N, SPLIT_K, OWN), ocol + 8, orow, mask2, OUT, stride_om,
                   BIAS, HAS_BIAS, TWO_D)

    @gluon.jit
    def finish(acc, acc2, ocol, orow, live, M, N, OUT, stride_om, BIAS, WS, CNT, tile_id, pid_k, SPLIT_K,
               HAS_BIAS: gl.constexpr, TWO_D: gl.constexpr, HB: gl.constexpr, LAST: gl.constexpr):
        """Without split-K: times TWO_D (+ bias), stored as fp16. With it, LAST (LAST_SPLIT_SUMS):
        the programs of the other splits store their partials and count themselves in (release),
        the program of the last split waits for the count (acquire), adds the partials in split
        order and its own sum from registers, and stores; it is the tile's last program in launch
        order, so the ones it waits for have started before it. Without LAST: every program stores
        its partial and counts in, the last to arrive sums them. The same sum either way.
        HB: acc2 holds batch rows 8-15 (columns ocol + 8). Only the ``live`` warps write."""
        mask = (ocol < M) & (orow < N) & live
        mask2 = (ocol + 8 < M) & (orow < N) & live
        if SPLIT_K == 1:
            _store(acc, ocol, orow, mask, OUT, stride_om, BIAS, HAS_BIAS, TWO_D)
            if HB:
                _store(acc2, ocol + 8, orow, mask2, OUT, stride_om, BIAS, HAS_BIAS, TWO_D)
        else:
            ws = WS + ocol * N + orow
            sums = pid_k == SPLIT_K - 1
            if not LAST:
                sums = pid_k < 0
            if sums:
                ws = ws + wait_count((CNT + tile_id + orow * 0).to(gl.int64), orow * 0 + (SPLIT_K - 1))
                _sum_store(acc, acc2, ws, ocol, orow, mask, mask2, M, N, OUT, stride_om, BIAS, SPLIT_K, True,
                           HAS_BIAS, TWO_D, HB)
                cta_barrier()  # every thread has seen the count before it is reset
                gl.atomic_xchg(CNT + tile_id, 0, sem="relaxed", scope="gpu")
            else:
                gl.store(ws + pid_k * M * N, acc, mask=mask)
                if HB:
                    gl.store(ws + 8 * N + pid_k * M * N, acc2, mask=mask2)
                cta_barrier()
                if LAST:
                    gl.atomic_add(CNT + tile_id, 1, sem="release", scope="gpu")
                else:
                    old = gl.atomic_add(CNT + tile_id, 1, sem="acq_rel", scope="gpu")
                    if old == SPLIT_K - 1:
                        _sum_store(acc, acc2, ws, ocol, orow, mask, mask2, M, N, OUT, stride_om, BIAS, SPLIT_K, False,
                                   HAS_BIAS, TWO_D, HB)
                        gl.atomic_xchg(CNT + tile_id, 0, sem="relaxed", scope="gpu")

    @gluon.jit
    def grid_dep(like, op: gl.constexpr):
        """A programmatic-dependent-launch instruction: griddepcontrol.wait (the grids this launch
        depends on have finished and their writes are visible; a no-op in a launch without the
        attribute) or griddepcontrol.launch_dependents (the next launch may start its programs)."""
        return gl.inline_asm_elementwise(f"griddepcontrol.{op}; mov.u32 $0, 0;", "=r,r", [like], dtype=gl.int32,
                                         is_pure=False, pack=1)

    @gluon.jit
    def ring_bases(like):
        """This thread's ring bases in the shared window, 16, 4 and 8 bytes a thread, as elements
        0, 1, 2 (3: a copy of 1) of its pack of four: an asm that takes the pack sees them as $k,
        $k+1, $k+2."""
        return gl.inline_asm_elementwise("{ .reg .u32 b, t; mov.u32 b, global_smem; mov.u32 t, %tid.x; "
                                         "mad.lo.u32 $0, t, 16, b; mad.lo.u32 $1, t, 4, b; "
                                         "mad.lo.u32 $2, t, 8, b; mov.u32 $3, $1; }", "=r,=r,=r,=r,r,r,r,r", [like],
                                         dtype=gl.int32, is_pure=True, pack=4)

    @gluon.jit
    def wait_copies(n: gl.constexpr, like):
        """cp.async.wait_group n: this thread's copy groups but the n newest have landed."""
        return gl.inline_asm_elementwise(f"cp.async.wait_group {n}; mov.u32 $0, 0; mov.u32 $1, 0; mov.u32 $2, 0; "
                                         "mov.u32 $3, 0;", "=r,=r,=r,=r,r,r,r,r", [like],
                                         dtype=gl.int32, is_pure=False, pack=4)

    @gluon.jit
    def read16(base, off: gl.constexpr):
        """This thread's 16 bytes at its 16-byte ring base + off (base: ring_bases' pack plus a
        wait token)."""
        return gl.inline_asm_elementwise(f"ld.shared.v4.u32 {{$0, $1, $2, $3}}, [$4+{off}];", "=r,=r,=r,=r,r,r,r,r",
                                         [base], dtype=gl.int32, is_pure=False, pack=4)

    @gluon.jit
    def read8(base, off: gl.constexpr):
        """3 bits: this thread's two low-bit words at its 8-byte ring base + off, as elements 0, 1
        (2, 3: copies)."""
        return gl.inline_asm_elementwise(f"ld.shared.v2.u32 {{$0, $1}}, [$6+{off}]; mov.b32 $2, $0; mov.b32 $3, $1;",
                                         "=r,=r,=r,=r,r,r,r,r", [base], dtype=gl.int32, is_pure=False, pack=4)

    @gluon.jit
    def read_scales(base, off: gl.constexpr):
        """This thread's two scales (rows 2g, 2g+1) at its 4-byte ring base + off: four fp16 as two
        pairs, the second a copy of the first."""
        return gl.inline_asm_elementwise(f"{{ .reg .u32 r; ld.shared.b32 r, [$3+{off}]; mov.b32 $0, r; "
                                         "mov.b32 $1, r; }", "=r,=r,r,r,r,r", [base], dtype=gl.float16,
                                         is_pure=False, pack=4)

    @gluon.jit
    def sum_parts(acc, tslot, kp, off: gl.constexpr, KU: gl.constexpr, TW: gl.constexpr):
        """The KU parts of a row tile's accumulators summed in part order, through shared memory at
        byte ``off``: each thread stores its 16 bytes in slot [part][tile][lane], then, after a
        barrier, adds up those of its tile's parts (the caller's barriers order the rest). Every
        warp of a tile gets the sum."""
        base = smem_base(tslot) + off + tslot * 16
        gl.inline_asm_elementwise("st.shared.v4.f32 [$8], {$4, $5, $6, $7}; mov.u32 $0, 0; mov.u32 $1, 0; "
                                  "mov.u32 $2, 0; mov.u32 $3, 0;", "=r,=r,=r,=r,f,f,f,f,r,r,r,r",
                                  [acc, base + kp * (TW * 512)], dtype=gl.int32, is_pure=False, pack=4)
        cta_barrier()
        return gl.inline_asm_elementwise(A.sum_parts_asm(KU, TW), "=f,=f,=f,=f,r,r,r,r", [base], dtype=gl.float32,
                                         is_pure=False, pack=4)

    @gluon.jit
    def smem_base(like):
        """The shared window's address (every element)."""
        return gl.inline_asm_elementwise("mov.u32 $0, global_smem;", "=r,r", [like], dtype=gl.int32, is_pure=True,
                                         pack=1)

    @gluon.jit
    def issue(Q, S, qo, qb, so, G, g1, SP, bases, BLK: gl.constexpr, BITS: gl.constexpr, STAGES: gl.constexpr,
              NT: gl.constexpr, SLOT: gl.constexpr):
        """Copy group G's codes and scales (nothing when G >= g1) into ring slot SLOT; 3 bits: qb
        the lane's low-bit words."""
        Gc = gl.minimum(G, g1 - 1)
        if BITS == 3:
            r = gl.inline_asm_elementwise(A.issue_asm(BITS, STAGES, NT, SLOT), "=r,=r,=r,=r" + ",l" * 8 + ",r" * 8
                                          + ",l" * 4, [(Q + qo + Gc * BLK).to(gl.int64), (S + so + Gc * SP).to(gl.int64),
                                                       (so * 0 + G < g1).to(gl.int32), bases,
                                                       (Q + qb + Gc * BLK).to(gl.int64)], dtype=gl.int32, is_pure=False,
                                          pack=4)
        else:
            r = gl.inline_asm_elementwise(A.issue_asm(BITS, STAGES, NT, SLOT), "=r,=r,=r,=r" + ",l" * 8 + ",r" * 8,
                                          [(Q + qo + Gc * BLK).to(gl.int64), (S + so + Gc * SP).to(gl.int64),
                                           (so * 0 + G < g1).to(gl.int32), bases], dtype=gl.int32, is_pure=False,
                                          pack=4)
        return r

    @gluon.jit
    def x_block(X, stride_xm, M, g0, g1, XOFF: gl.constexpr, GMAX: gl.constexpr, XR: gl.constexpr,
                NT: gl.constexpr, L1: gl.constexpr, XS: gl.constexpr = 256):
        """cp.async the program's activations, [group][batch row][128] fp16 (XR rows, GMAX groups),
        into the block at XOFF: 16-byte pieces, thread t taking pieces t, t + NT, ..; the rows past
        M and the groups past g1 zero-filled; one commit. A row takes XS bytes: 256 dense, or 288
        (XS_PADDED: 16 bytes after each half row, so the eight lanes of a 16-byte read phase, two
        batch rows times four lanes c, hit eight different bank quads); see x_offset."""
        t = gl.arange(0, NT, layout=L1)
        base = smem_base(t) + XOFF
        for k in gl.static_range((GMAX * XR * 16 + NT - 1) // NT):
            p = t + k * NT
            gg = p // (XR * 16)
            r = p // 16 % XR
            ok = (p < GMAX * XR * 16) & (r < M)
            real = g0 + gg < g1
            src = (X + r * (stride_xm // 2) + gl.minimum(g0 + gg, g1 - 1) * 64 + p % 16 * 4).to(gl.int64)
            dst = base + (gg * XR + r) * XS + p % 16 * 16 + p % 16 // 8 * ((XS - 256) // 2)
            gl.inline_asm_elementwise("{ .reg .pred v; .reg .u32 sz; setp.ne.s32 v, $3, 0; "
                                      "{ .reg .pred q; setp.ne.s32 q, $4, 0; selp.u32 sz, 16, 0, q; } "
                                      "@v cp.async.cg.shared.global [$2], [$1], 16, sz; mov.u32 $0, 0; }", "=r,l,r,r,r",
                                      [src, dst, ok.to(gl.int32), real.to(gl.int32)],
                                      dtype=gl.int32, is_pure=False, pack=1)
        return gl.inline_asm_elementwise("cp.async.commit_group; mov.u32 $0, 0;", "=r,r", [t], dtype=gl.int32,
                                         is_pure=False, pack=1)

    @gluon.jit
    def prefetch_l2(Q, S, ta, G, g1, NG, SP, z, BLK: gl.constexpr):
        """Groups G .. g1 - 1 of each warp's row tile into L2 (lop3_asm.prefetch_asm): the codes,
        contiguous in the layout, by one bulk prefetch a warp, the scales a group a lane; z: zeros
        of the lanes' shape."""
        n = gl.maximum(z + g1 - G, 0)
        codes = (Q + (ta.to(gl.int64) * NG + G) * BLK + z).to(gl.int64)
        return gl.inline_asm_elementwise(A.prefetch_asm(), "=r,=r,=r,=r" + ",l" * 4 + ",r" * 4 + ",l" * 4 + ",r" * 8,
                                         [codes, n * (BLK * 4), (S + ta * 16 + G * SP + z).to(gl.int64), n,
                                          z + SP * 2], dtype=gl.int32, is_pure=False, pack=4)

    @gluon.jit
    def stamp(TLB, pid, PH: gl.constexpr, TL: gl.constexpr):
        """TL (the timeline, benchmarks/lop3_timeline.py): thread 0 writes %globaltimer (ns) and
        %clock64 at phase PH of program pid to TLB[pid, PH] (phase 0 also %smid at TLB[pid, 4])."""
        if TL:
            gl.inline_asm_elementwise(A.stamp_asm(PH), "=r,l", [(TLB + pid * 10).to(gl.int64)], dtype=gl.int32,
                                      is_pure=False, pack=1)

    @gluon.jit
    def _step(Q, S, qo, qb, so, G, g1, SP, bases, xg, xg2, acc, acc2, q64, q16, q4, t, BLK: gl.constexpr,
              BITS: gl.constexpr, ZCK: gl.constexpr, ONE_ROW: gl.constexpr, STAGES: gl.constexpr, NT: gl.constexpr,
              CH: gl.constexpr, XR: gl.constexpr, SOFF: gl.constexpr, XS: gl.constexpr, HB: gl.constexpr,
              OB: gl.constexpr, i: gl.constexpr):
        """Group G, the i-th of its loop iteration, from ring slot i % STAGES: wait for it, read it
        back, refill the slot of group G - 1 with group G + STAGES - 1, decode; with HB, batch rows
        8-15 too (activations at xg2, into acc2); OB: t holds its block's corrections."""
        SL: gl.constexpr = i % STAGES
        base = bases + wait_copies(STAGES - 2, bases)
        w0 = read16(base, SL * CH * NT * 16)
        w1 = w0
        wb = w0
        if BITS == 4:
            w1 = read16(base, (SL * CH + 1) * NT * 16)
        if BITS == 3:
            wb = read8(base, A.low_ring(BITS, STAGES, NT) + SL * NT * 8)
        x0 = read16(xg, i * XR * XS)
        x1 = read16(xg, i * XR * XS + 16)
        x2 = read16(xg, i * XR * XS + 32)
        x3 = read16(xg, i * XR * XS + 48)
        s = read_scales(base, SOFF + SL * NT * 4)
        if HB:
            y0 = read16(xg2, i * XR * XS)
            y1 = read16(xg2, i * XR * XS + 16)
            y2 = read16(xg2, i * XR * XS + 32)
            y3 = read16(xg2, i * XR * XS + 48)
        issue(Q, S, qo, qb, so, G + STAGES - 1, g1, SP, bases, BLK, BITS, STAGES, NT, (SL + STAGES - 1) % STAGES)
        acc = group_math(w0, w1, wb, x0, x1, x2, x3, s, acc, q64, q16, q4, t, BITS, ZCK, ONE_ROW, OB, i)
        if HB:
            acc2 = group_math(w0, w1, wb, y0, y1, y2, y3, s, acc2, q64, q16, q4, t, BITS, ZCK, False, False, i)
        return acc, acc2

    @gluon.jit
    def lop3_kernel(X, stride_xm, Q, S, AQ, OUT, stride_om, BIAS, WS, CNT, M, N, SP, NG, GPS, SPLIT_K,
                    NW: gl.constexpr, BITS: gl.constexpr, ZCK: gl.constexpr, ONE_ROW: gl.constexpr,
                    STAGES: gl.constexpr, GMAX: gl.constexpr, XR: gl.constexpr, SOFF: gl.constexpr,
                    XOFF: gl.constexpr, WORDS: gl.constexpr, HAS_BIAS: gl.constexpr, TWO_D: gl.constexpr,
                    XS: gl.constexpr, HB: gl.constexpr, OB: gl.constexpr, KU: gl.constexpr, TLB, TL: gl.constexpr,
                    LAST: gl.constexpr, PDL: gl.constexpr, PF: gl.constexpr):
        """NW warps, one row tile each, groups GPS * pid_k .. of the K axis (see the module doc); the
        weight is TWO_D · s · (k - ZCK). The loop is unrolled STAGES times, so every ring address is
        the thread's base plus a constant. OB (batch 1, STAGES dividing 8): unrolled eight times,
        one offset mma a block of eight groups, its B column n group n of the block (lane group g
        reads group g's activations), each group's correction then fetched from the lane that
        holds it: 1 mma a group in place of 8. KU > 1: the NW warps take NW / KU row tiles, KU
        warps a tile, each a consecutive part of the program's K range (GPW groups); their sums
        meet in shared memory, not in the split-K workspace. TL: phase timestamps into TLB (see
        stamp). PDL 1 / 2: the first weight groups copied before griddepcontrol.wait, the dependents
        let start after it / after the group loop. PF: each warp's groups past the ring's first
        ones prefetched into L2 right after those copies (prefetch_l2)."""
        LY: gl.constexpr = gl.BlockedLayout([1, 4], [1, 32], [NW, 1], [1, 0])
        L1: gl.constexpr = gl.BlockedLayout([1], [32], [NW], [0])
        NT: gl.constexpr = 32 * NW
        TW: gl.constexpr = NW // KU
        CH: gl.constexpr = BITS // 2
        BLK: gl.constexpr = 64 * BITS
        # the window the asm addresses: one allocation (check_window: at offset 0), kept alive by a
        # store at the start and one at the end (nothing reads them)
        res = gl.allocate_shared_memory(gl.int32, [WORDS], gl.SwizzledSharedLayout(1, 1, 1, [0]))
        z1 = gl.zeros([NT], gl.int32, L1)
        pid_n = gl.program_id(0)
        pid_k = gl.program_id(1)
        pid = pid_k * gl.num_programs(0) + pid_n
        stamp(TLB, pid, 0, TL)
        res.slice(0, NT).store(z1)
        cta_barrier()  # that store lands before any thread's copies
        g, c, e, ta, so, kp, tslot = lanes(pid_n, NW, TW, LY)
        q64, q16, q4 = quads(AQ, e, ta)
        qo = ta.to(gl.int64) * (NG * BLK) + (g * 4 + c) * 4 + e  # word set u of a lane at + 128 u
        qb = ta.to(gl.int64) * (NG * BLK) + 128 + (g * 4 + c) * 2 + e % 2  # 3 bits: the low-bit words
        bases = ring_bases(e)
        g0 = pid_k * GPS
        g1 = gl.minimum(g0 + GPS, NG)
        if KU == 1:  # scalars: the group loop's addresses as without parts
            GPW = g1 - g0
            gw0 = g0
            gw1 = g1
        else:
            GPW = (GPS + KU - 1) // KU  # groups a part
            gw0 = g0 + kp * GPW  # this warp's part: groups gw0 .. gw1 (none past g1)
            gw1 = gl.minimum(gw0 + GPW, g1)
        if PDL == 0:  # the activations first (the oldest copy group)
            x_block(X, stride_xm, M, g0, g1, XOFF, GMAX, XR, NT, L1, XS)
        for i in gl.static_range(STAGES - 1):  # PDL: before the wait (no launch writes the weights), so they
            issue(Q, S, qo, qb, so, gw0 + i, gw1, SP, bases, BLK, BITS, STAGES, NT, i)  # load as the last one ends
        if PF:  # the rest of the range into L2 (before the wait with PDL: while the launch before ends)
            prefetch_l2(Q, S, ta, gw0 + (STAGES - 1), gw1, NG, SP, so * 0, BLK)
        if PDL == 0:
            wait_copies(STAGES - 1, e)  # the activation block has landed, for this thread
        else:
            grid_dep(z1, "wait")  # the launches this one depends on have finished: x, OUT, WS and CNT are free
            if PDL == 1:
                grid_dep(z1, "launch_dependents")
            x_block(X, stride_xm, M, g0, g1, XOFF, GMAX, XR, NT, L1, XS)
            wait_copies(0, e)  # the activations, now the newest group (and the ring's first groups)
        cta_barrier()  # and for every thread
        stamp(TLB, pid, 1, TL)
        xc = smem_base(e) + XOFF + c * 64 + c // 2 * ((XS - 256) // 2) + (gw0 - g0) * (XR * XS)  # the part's
        xl = xc + gl.minimum(g, M - 1) * XS  # batch row g (the mma's column), rows past M read row M - 1
        xl2 = xc + gl.minimum(g + 8, M - 1) * XS  # HB: batch row g + 8
        acc = gl.zeros([NW, 128], gl.float32, LY)
        acc2 = acc
        if OB:
            xb = xc + g * XS  # lane group g: group g of each block (XR = 1, GMAX >= 8)
            for J0 in range(0, GPW, 8):  # the part's groups gw0 + J0 ..; past gw1 the copies add 0 (issue)
                xo = xb + J0 * XS
                t = offsets(read16(xo, 0), read16(xo, 16), read16(xo, 32), read16(xo, 48), acc, q64, q16, q4, BITS)
                t = gl.inline_asm_elementwise(A.block_t_asm(ZCK), "=f,=f,=f,=f,f,f,f,f", [t], dtype=gl.float32,
                                              is_pure=True, pack=4)
                xg = xl + J0 * XS
                for i in gl.static_range(8):
                    if J0 + i < GPW:
                        acc, acc2 = _step(Q, S, qo, qb, so, gw0 + J0 + i, gw1, SP, bases, xg, xg, acc, acc2, q64, q16,
                                          q4, t, BLK, BITS, ZCK, ONE_ROW, STAGES, NT, CH, XR, SOFF, XS, HB, OB, i)
        else:
            for J0 in range(0, GPW, STAGES):
                xg = xl + J0 * (XR * XS)
                xg2 = xl2 + J0 * (XR * XS)
                for i in gl.static_range(STAGES):
                    if J0 + i < GPW:
                        acc, acc2 = _step(Q, S, qo, qb, so, gw0 + J0 + i, gw1, SP, bases, xg, xg2, acc, acc2, q64,
                                          q16, q4, acc, BLK, BITS, ZCK, ONE_ROW, STAGES, NT, CH, XR, SOFF, XS, HB, OB,
                                          i)
        wait_copies(0, e)
        cta_barrier()
        if PDL == 2:  # the next launch's programs may start (they wait for this one's end to read x)
            grid_dep(z1, "launch_dependents")
        stamp(TLB, pid, 2, TL)
        res.slice(0, NT).store(z1)
        if KU > 1:  # past the keep-alive words: the parts' sums (the rings are drained)
            acc = sum_parts(acc, tslot, kp, 4 * NT, KU, TW)
            if HB:
                acc2 = sum_parts(acc2, tslot, kp, 20 * NT, KU, TW)
        orow = 16 * ta + 2 * g + e // 2
        ocol = 2 * c + e % 2
        finish(acc, acc2, ocol, orow, kp == 0, M, N, OUT, stride_om, BIAS, WS, CNT, pid_n, pid_k, SPLIT_K, HAS_BIAS,
               TWO_D, HB, LAST)
        stamp(TLB, pid, 3, TL)


LAST_SPLIT_SUMS = True  # split-K: the last split's program sums (finish); off: the last to arrive (H100: 0.97-1.0x)
# whether a config's pdl holds ("0": every launch without programmatic dependent launch)
PDL = os.environ.get("MATGPTQ_LOP3_PDL", "1")
if PDL not in ("0", "1"):
    raise ValueError(f"MATGPTQ_LOP3_PDL={PDL!r}: set it to 0 (no lop3 launch takes programmatic dependent launch, "
                     "whatever its config's pdl) or 1 (a config's pdl holds), or leave it unset (1)")
PDL = PDL == "1"
BLOCK_OFFSETS = True  # batch 1: the offset mma once per block of eight groups (OB); off: per group, as at 2-16 rows
MAX_M = 16  # batch rows per launch: the eight columns of one m16n8k16, or two of them (HB)
XS_PADDED = 288  # bytes per activation row in shared memory (x_block)


def _pow2(v: int) -> int:
    return 1 << max(0, int(v) - 1).bit_length()


def block_offsets(m: int, stages: int) -> bool:
    """Whether a launch of ``m`` rows takes the kernel's OB path (BLOCK_OFFSETS, batch 1, and a
    ring whose slots repeat within a block of eight groups)."""
    return BLOCK_OFFSETS and m == 1 and 8 % stages == 0


def launch_consts(bits: int, warps: int, stages: int, gps: int, m: int, k_parts: int = 1) -> dict:
    """The kernel's layout constants: GMAX groups and XR >= M rows of activations in shared memory
    after the rings, GMAX covering the ``k_parts`` parts of GPW = ceil(GPS / k_parts) groups (OB:
    whole blocks of eight groups a part), zero past the program's last group."""
    if warps % k_parts:
        raise ValueError(f"k_parts={k_parts} does not divide warps={warps}: each row tile takes k_parts warps")
    ob = block_offsets(m, stages)
    gpw = -(-gps // k_parts)
    gmax, xr = _pow2(k_parts * (-(-gpw // 8) * 8 if ob else gpw)), _pow2(m)
    soff, xoff, words = A.ring_regions(bits, stages, 32 * warps, gmax * xr * XS_PADDED)
    return dict(NW=warps, BITS=bits, STAGES=stages, GMAX=gmax, XR=xr, SOFF=soff, XOFF=xoff, WORDS=words,
                XS=XS_PADDED, HB=m > 8, OB=ob, KU=k_parts)


def shared_bytes(bits: int, warps: int, stages: int, gps: int, m: int, k_parts: int = 1) -> int:
    return 4 * launch_consts(bits, warps, stages, gps, m, k_parts)["WORDS"]


_checked: set = set()


def check_window(k) -> None:
    """The asm addresses the window from offset 0: the one allocation must sit there (its first use
    in the LLVM IR, the store at the kernel's start, takes @global_smem with no offset)."""
    if k is None or id(k) in _checked:
        return
    first = re.search(r"getelementptr[^\n]*@global_smem(, i32 \d+)?", k.asm["llir"])
    if first is None or first.group(1):
        raise RuntimeError(f"lop3_kernel: the ring allocation is not at shared offset 0 ({first and first.group(0)})")
    _checked.add(id(k))


_quad_tables: dict = {}


def _quads_on(device: torch.device, bits: int) -> torch.Tensor:
    key = (device.type, device.index, bits)
    t = _quad_tables.get(key)
    if t is None:
        t = _quad_tables[key] = torch.tensor(A.offset_quads(bits), dtype=torch.int32, device=device)
    return t


def launch_lop3(x2: torch.Tensor, words: torch.Tensor, scales: torch.Tensor, n: int, k: int, bits: int,
                two_d: float, zb: float, out: torch.Tensor, bias: torch.Tensor | None, ws: torch.Tensor,
                cnt: torch.Tensor, warps: int, stages: int, split_k: int,
                timeline: torch.Tensor | None = None, k_parts: int = 1, pdl: int = 0,
                l2_prefetch: int = 0) -> torch.Tensor:
    """out = x2 · Ŵᵀ (+ bias), Ŵ = s · (k · 2^d - z_b), for M <= 16 fp16 rows (``scales``:
    lop3_pack.pad_scales). ``ws`` / ``cnt``: the split-K workspace (split · M · N floats) and
    N / (16 · warps / k_parts) zeroed counters (the kernel leaves them zero). ``k_parts``: warps
    a row tile, each on a part of the program's K range. ``pdl``: programmatic dependent launch,
    0 none, 1 the next launch may start once all programs have started, 2 once all have finished
    their group loop; with 1 or 2 the programs load their first weight groups before waiting for
    the launch before (unless MATGPTQ_LOP3_PDL=0). ``l2_prefetch``: 1 prefetches each warp's
    groups past its ring's first ones into L2 at the start (before the wait, with pdl): a hint,
    the output is the same. ``timeline``: int64 [programs, 10] to receive each program's phase
    timestamps (:func:`timeline_programs`)."""
    if x2.shape[0] > MAX_M or x2.dtype != torch.float16:
        raise ValueError(f"the lop3 kernel takes at most {MAX_M} fp16 rows a launch, not {x2.dtype} x "
                         f"{tuple(x2.shape)}; call matgptq.kernels.dispatch.quant_matmul, which serves larger "
                         "batches and other dtypes with the lop3 layout's tensor-core kernel")
    m = x2.shape[0]
    ng = k // 128
    gps = -(-ng // split_k)
    split = -(-ng // gps)
    cst = launch_consts(bits, warps, stages, gps, m, k_parts)
    grid = (n // (16 * warps // k_parts), split)
    h = lop3_kernel[grid](x2.view(torch.int32), x2.stride(0), words, scales, _quads_on(x2.device, bits), out, out.stride(0),
                          bias if bias is not None else out, ws, cnt, m, n, scales.shape[1], ng, gps, split,
                          ZCK=float(zb / two_d), TWO_D=float(two_d), ONE_ROW=m == 1, HAS_BIAS=bias is not None,
                          TLB=timeline if timeline is not None else cnt, TL=timeline is not None, num_warps=warps,
                          LAST=LAST_SPLIT_SUMS, PDL=pdl if PDL else 0, PF=bool(l2_prefetch),
                          launch_pdl=bool(pdl and PDL), **cst)
    check_window(h)
    return out


def timeline_programs(n: int, k: int, warps: int, split_k: int, k_parts: int = 1) -> int:
    """Programs of a launch (rows of its ``timeline``): row tiles x the split that covers K."""
    ng = k // 128
    return n // (16 * warps // k_parts) * -(-ng // -(-ng // split_k))
