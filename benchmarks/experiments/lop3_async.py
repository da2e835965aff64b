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
def regions(bits, stages, nthreads, xs):
    """Byte offsets in the shared window of the per-thread rings, largest first as Triton's
    allocator places the three allocations: activations [stage][q][thread] 16 bytes (xs), codes
    [stage][chunk][thread] 16 bytes, scales [stage][thread] 4 bytes; and the total."""
    bits, stages, nthreads = int(bits), int(stages), int(nthreads)
    coff = stages * 4 * nthreads * 16 if xs else 0
    soff = coff + stages * (bits // 2) * nthreads * 16
    return coff, soff, soff + stages * nthreads * 4


@triton.constexpr_function
def _issue_asm(bits, stages, nthreads, xs, slot):
    """Copy one group into slot ``slot`` of this thread's rings: $4 the code address, $8 the
    activation address, $12 the scale address (int64, element 0 of each lane's four), $16 the x
    predicate, $20 whether the group is real (else nothing is copied; the group is still committed
    so that the wait counts stay exact), $24 / $25 the thread's ring bases (16 / 4 bytes a thread:
    elements 0 and 1 of the pack :func:`_bases` makes).
    $0-3 a dummy result."""
    bits, stages, nthreads, xs, slot = int(bits), int(stages), int(nthreads), bool(xs), int(slot)
    ch = bits // 2
    coff, soff, _ = regions(bits, stages, nthreads, xs)
    t = ["{", ".reg .pred v, px;", "setp.ne.s32 v, $20, 0;", "setp.ne.s32 px, $16, 0;", "and.pred px, px, v;"]
    for j in range(ch):
        t.append(f"@v cp.async.cg.shared.global [$24+{coff + (slot * ch + j) * nthreads * 16}], [$4+{16 * j}], 16;")
    if xs:
        for q in range(4):
            t.append(f"@px cp.async.cg.shared.global [$24+{(slot * 4 + q) * nthreads * 16}], [$8+{16 * q}], 16;")
    t.append(f"@v cp.async.ca.shared.global [$25+{soff + slot * nthreads * 4}], [$12], 4;")
    t += ["cp.async.commit_group;", "mov.u32 $0, 0;", "mov.u32 $1, 0;", "mov.u32 $2, 0;", "mov.u32 $3, 0;", "}"]
    return "\n".join(t)


if gluon is not None:

    @gluon.jit
    def _bases(like):
        """This thread's ring bases in the shared window, 16 and 4 bytes a thread, as elements 0, 1
        (and again 2, 3) of its pack of four: an asm that takes the pack sees them as $k, $k+1."""
        return gl.inline_asm_elementwise("{ .reg .u32 b, t; mov.u32 b, global_smem; mov.u32 t, %tid.x; "
                                         "mad.lo.u32 $0, t, 16, b; mad.lo.u32 $1, t, 4, b; "
                                         "mov.u32 $2, $0; mov.u32 $3, $1; }", "=r,=r,=r,=r,r,r,r,r", [like],
                                         dtype=gl.int32, is_pure=True, pack=4)

    @gluon.jit
    def _wait(n: gl.constexpr, like):
        """cp.async.wait_group n: this thread's copy groups but the n newest have landed."""
        return gl.inline_asm_elementwise(f"cp.async.wait_group {n}; mov.u32 $0, 0; mov.u32 $1, 0; mov.u32 $2, 0; "
                                         "mov.u32 $3, 0;", "=r,=r,=r,=r,r,r,r,r", [like],
                                         dtype=gl.int32, is_pure=False, pack=4)

    @gluon.jit
    def _rd(base, off: gl.constexpr):
        """This thread's 16 bytes at its 16-byte ring base + off (base: :func:`_bases`' pack plus a
        wait token)."""
        return gl.inline_asm_elementwise(f"ld.shared.v4.u32 {{$0, $1, $2, $3}}, [$4+{off}];", "=r,=r,=r,=r,r,r,r,r",
                                         [base], dtype=gl.int32, is_pure=False, pack=4)

    @gluon.jit
    def _rd_s(base, off: gl.constexpr):
        """This thread's two scales (rows 2g, 2g+1) at its 4-byte ring base + off: four fp16 as two
        pairs, the second a copy of the first."""
        return gl.inline_asm_elementwise(f"{{ .reg .u32 r; ld.shared.b32 r, [$3+{off}]; mov.b32 $0, r; "
                                         "mov.b32 $1, r; }", "=r,=r,r,r,r,r", [base], dtype=gl.float16,
                                         is_pure=False, pack=4)

    @gluon.jit
    def _issue(Q, X, S, qo, xo, so, xm, G, g1, SP, bases, BLK: gl.constexpr, BITS: gl.constexpr,
               STAGES: gl.constexpr, NT: gl.constexpr, XS: gl.constexpr, SLOT: gl.constexpr):
        """Copy group G (nothing when G >= g1) into ring slot SLOT."""
        Gc = gl.minimum(G, g1 - 1)
        return gl.inline_asm_elementwise(_issue_asm(BITS, STAGES, NT, XS, SLOT),
                                         "=r,=r,=r,=r" + ",l" * 12 + ",r" * 12,
                                         [(Q + qo + Gc * BLK).to(gl.int64), (X + xo + Gc * 64).to(gl.int64),
                                          (S + so + Gc * SP).to(gl.int64), xm, (so * 0 + G < g1).to(gl.int32),
                                          bases], dtype=gl.int32, is_pure=False, pack=4)

    @gluon.jit
    def alop3_kernel(X, stride_xm, Q, S, AQ, OUT, stride_om, WS, CNT, M, N, SP, NG, GPS, SPLIT_K,
                     NW: gl.constexpr, BITS: gl.constexpr, ZCK: gl.constexpr, ONE_ROW: gl.constexpr,
                     STAGES: gl.constexpr, XS: gl.constexpr, COFF: gl.constexpr, SOFF: gl.constexpr):
        """NW warps, one row tile each, groups GPS * pid_k .. of the K axis; group G is copied
        STAGES - 1 groups before it is decoded. The loop is unrolled STAGES times, so every ring
        address is the thread's base plus a constant."""
        LY: gl.constexpr = gl.BlockedLayout([1, 4], [1, 32], [NW, 1], [1, 0])
        L1: gl.constexpr = gl.BlockedLayout([1], [32], [NW], [0])
        NT: gl.constexpr = 32 * NW
        CH: gl.constexpr = BITS // 2
        WPL: gl.constexpr = 2 * BITS
        BLK: gl.constexpr = 64 * BITS
        # reserve the window (the rings are addressed by the asm): three allocations, which
        # _check_window checks sit at 0 / COFF / SOFF as regions() lays the rings out
        SHL: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [0])
        rc = gl.allocate_shared_memory(gl.int32, [STAGES * CH * NT * 4], SHL)
        rs = gl.allocate_shared_memory(gl.int32, [STAGES * NT], SHL)
        z1 = gl.zeros([NT], gl.int32, L1)
        rc.slice(0, NT).store(z1)  # the stores keep the allocations (nothing reads them)
        rs.slice(0, NT).store(z1)
        if XS:
            rx = gl.allocate_shared_memory(gl.int32, [STAGES * 4 * NT * 4], SHL)
            rx.slice(0, NT).store(z1)
        gl.thread_barrier()  # those stores land before any thread's copies
        pid_n = gl.program_id(0)
        pid_k = gl.program_id(1)
        g, c, e, ta, xo, xm, so = LG._lanes(pid_n, M, stride_xm, NW, LY)
        q64, q16, q4 = LG._quads(AQ, e, ta)
        qo = ta.to(gl.int64) * (NG * BLK) + (g * 4 + c) * WPL + e
        xmi = xm.to(gl.int32)
        bases = _bases(e)
        g0 = pid_k * GPS
        g1 = gl.minimum(g0 + GPS, NG)
        for i in gl.static_range(STAGES - 1):
            _issue(Q, X, S, qo, xo, so, xmi, g0 + i, g1, SP, bases, BLK, BITS, STAGES, NT, XS, i)
        if not XS:
            xs = LG._gload_x(X, xo, xm, g0)
        acc = gl.zeros([NW, 128], gl.float32, LY)
        for G0 in range(g0, g1, STAGES):
            for i in gl.static_range(STAGES):
                G = G0 + i
                if G < g1:
                    base = bases + _wait(STAGES - 2, e)
                    w0 = _rd(base, COFF + i * CH * NT * 16)
                    w1 = w0
                    if BITS == 4:
                        w1 = _rd(base, COFF + (i * CH + 1) * NT * 16)
                    if XS:
                        x0 = _rd(base, (4 * i + 0) * NT * 16)
                        x1 = _rd(base, (4 * i + 1) * NT * 16)
                        x2 = _rd(base, (4 * i + 2) * NT * 16)
                        x3 = _rd(base, (4 * i + 3) * NT * 16)
                    else:
                        x0, x1, x2, x3 = xs
                        xs = LG._gload_x(X, xo, xm, gl.minimum(G + 1, g1 - 1))
                    s = _rd_s(base, SOFF + i * NT * 4)
                    _issue(Q, X, S, qo, xo, so, xmi, G + STAGES - 1, g1, SP, bases, BLK, BITS, STAGES, NT, XS,
                           (i + STAGES - 1) % STAGES)
                    acc = LG._group_math(w0, w1, x0, x1, x2, x3, s, acc, q64, q16, q4, BITS, ZCK, ONE_ROW)
        _wait(0, e)
        gl.thread_barrier()
        rc.slice(0, NT).store(z1)  # live to the end: the allocator must not overlap them
        rs.slice(0, NT).store(z1)
        if XS:
            rx.slice(0, NT).store(z1)
        orow = 16 * ta + 2 * g + e // 2
        ocol = 2 * c + e % 2
        LG._finish(acc, ocol, orow, M, N, OUT, stride_om, WS, CNT, pid_n, pid_k, SPLIT_K)


def _consts(bits, warps, stages, xs):
    coff, soff, _ = regions(bits, stages, 32 * warps, xs)
    return dict(NW=warps, BITS=bits, STAGES=stages, XS=int(xs), COFF=coff, SOFF=soff)


def run(lw, x, out, warps=4, stages=4, split_k=1, ws=None, cnt=None, xs=True):
    """alop3_kernel; ``xs``: activations through the ring too (else plain loads one group ahead)."""
    m = x.shape[0]
    ng = lw.k // 128
    gps = triton.cdiv(ng, split_k)
    split_k = triton.cdiv(ng, gps)
    grid = (lw.n // (16 * warps), split_k)
    if ws is None:
        ws, cnt = LG._split_buffers(lw, m, split_k, grid[0], x.device)
    cst = _consts(lw.bits, warps, stages, xs)
    k = alop3_kernel[grid](x.view(torch.int32), x.stride(0), lw.q, lw.s, lw.aq, out, out.stride(0), ws, cnt, m, lw.n,
                           lw.sp, ng, gps, split_k, ZCK=lw.zc, ONE_ROW=m == 1, num_warps=warps, **cst)
    _check_window(k, cst["COFF"], cst["SOFF"])
    return out


_seen: set = set()


def _check_window(k, coff, soff):
    """The asm addresses the rings where regions() puts them: the allocations' offsets in the LLVM
    IR (the largest at 0, which takes no offset) must be COFF and SOFF (COFF 0 without the x ring)."""
    if k is None or id(k) in _seen:  # None: a launch that returns no handle (not checked)
        return
    import re

    got = sorted({int(v) for v in re.findall(r"@global_smem, i32 (\d+)\)", k.asm["llir"])})
    want = sorted({v for v in (coff, soff) if v})
    if got != want:
        raise RuntimeError(f"alop3_kernel: shared allocations at {got}, the rings assume {want}")
    _seen.add(id(k))


def sass_counts(bits, warps, stages, xs):
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    fn = alop3_kernel
    names = fn.arg_names
    ptr = {"X": "*i32", "Q": "*i32", "S": "*fp16", "AQ": "*i32", "OUT": "*fp16", "WS": "*fp32", "CNT": "*i32"}
    ring = _consts(bits, warps, stages, xs)
    cst = dict(ZCK=float(1 << (bits - 1)), ONE_ROW=True, **ring)
    sig = {n: "constexpr" if n in cst else ptr.get(n, "i32") for n in names}
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in ("X", "stride_xm", "Q", "S", "AQ", "OUT",
                                                                    "stride_om", "N", "SP", "WS", "CNT")}
    src = GluonASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in cst.items()},
                         attrs=attrs)
    comp = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps))
    _check_window(comp, ring["COFF"], ring["SOFF"])
    # the loop runs STAGES groups (16 mmas each) per iteration
    return comp, L.per_weight(comp, stages * 16 * 128 / 32, mmas=16 * stages)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sass", action="store_true")
    ap.add_argument("--shapes", default="4096x14336,14336x4096,8192x8192,16384x16384")
    ap.add_argument("--bits", default="2,4")
    ap.add_argument("--xs", default="1,0", help="activations through the ring (1), plain loads (0)")
    ap.add_argument("--stages", default="4,8")
    ap.add_argument("--out", default=None)
    ap.add_argument("--tag", default="h200")
    args = ap.parse_args()
    stages = [int(v) for v in args.stages.split(",")]
    if args.sass:
        rows = []
        for xs in (int(v) for v in args.xs.split(",")):
            for bits in (int(b) for b in args.bits.split(",")):
                for st in stages:
                    _, (regs, n, pw, mix) = sass_counts(bits, 4, st, xs)
                    rows.append(dict(bits=bits, xs=xs, stages=st, registers=regs, loop=n, per_weight=round(pw, 3),
                                     mix=mix))
                    print(f"xs{xs} {bits}-bit stages {st}: {regs} registers, loop {n}, {pw:.2f} per weight  {mix}",
                          flush=True)
        if args.out:
            with open(os.path.join(args.out, "lop3_async_sass_triton36.json"), "w") as f:
                json.dump(rows, f, indent=1)
        return
    if not torch.cuda.is_available():
        raise SystemExit("lop3_async.py: the GPU modes need CUDA; --sass runs without one")
    for xs in (int(v) for v in args.xs.split(",")):
        LG.compare(args, functools.partial(run, xs=bool(xs)), ((4, 4, 1), (4, 8, 4), (2, 4, 2)),
                   lambda n, ng: [(w, st, sk) for w in (2, 4) for st in stages for sk in LG._splits(ng)],
                   f"async_xs{xs}")


if __name__ == "__main__":
    main()
