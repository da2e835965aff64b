"""Experiment: the lop3 layout's batch 1-8 kernel (``lop3_layout.py``) with its code, activation and
scale streams staged through shared memory by ``cp.async`` in a STAGES-deep ring (Gluon, Triton's
explicit-layout dialect), instead of held in registers.

``lop3_layout.py`` measured that kernel's mid shapes as bound by memory latency (with every stream
read from cache it ran in 7-10 µs, as is in 13-15): a register double buffer holds one or two
groups in flight per warp, and deeper register buffers cost registers and occupancy. Here every
lane copies its own 16-byte pieces (the same distributed layout for the copy and for the load
back), so a group's data can be STAGES - 1 groups ahead for the cost of shared memory only.

``tlop3_kernel`` (``--tma``) takes the codes by TMA instead: one box of the CTA's row tiles per group
into an mbarrier ring, the activations and scales by plain loads one group ahead, with split-K.
``wlop3_kernel`` (``--ws``) is the same with warp specialization: a producer warp issues the TMA,
four consumer warps free each slot through an "empty" mbarrier (compiled offline, not yet run).

    PYTHONPATH=<Triton 3.6>:src python benchmarks/experiments/lop3_gluon.py --sass   # offline counts
    python benchmarks/experiments/lop3_gluon.py --out DIR                               # GPU: check, time
    python benchmarks/experiments/lop3_gluon.py --tma --out DIR                         # the TMA kernel
    python benchmarks/experiments/lop3_gluon.py --ws --out DIR                          # warp-specialized

Measured (benchmarks/experiments/README.md): both correct, both slower than the library. Not done:
split-K in ``glop3_kernel``, tile sets (TPW), zero points other than the one symmetric constant, a
producer warp for the TMA issue.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import lop3_layout as L  # noqa: E402  (layout, packing, reference, asm text)

try:
    import triton
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.ampere import async_copy as cp
    from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma
except ImportError:  # pragma: no cover
    gluon = None

if gluon is not None:
    # the decode, the offset mma and a group's end, as the library's lop3 kernel has them
    from matgptq.kernels.lop3_kernel import code2 as _code2  # noqa: F401
    from matgptq.kernels.lop3_kernel import finish, lanes
    from matgptq.kernels.lop3_kernel import group_math as _group_math  # noqa: F401
    from matgptq.kernels.lop3_kernel import off2 as _off2  # noqa: F401
    from matgptq.kernels.lop3_kernel import quad as _quad  # noqa: F401
    from matgptq.kernels.lop3_kernel import quads as _quads  # noqa: F401

    @gluon.jit
    def _lanes(pid_n, M, stride_xm, NW: gl.constexpr, LY: gl.constexpr):
        """The library kernel's lane indices (lane group g, lane c, register e, the tiles, the scale
        offsets) plus the activation offsets and mask (real batch rows only) of register loads."""
        g, c, e, ta, so = lanes(pid_n, NW, LY)
        xo = gl.minimum(g, M - 1) * (stride_xm // 2) + 16 * c + e + ta * 0
        xm = (g < M) & (ta >= 0)
        return g, c, e, ta, xo, xm, so

    @gluon.jit
    def _issue(cs, xs, ss, slot, Q, X, S, qo, xo, so, xm, G, SP, BLK: gl.constexpr, BITS: gl.constexpr):
        """cp.async group G's codes, activations (lanes of real batch rows only) and scales into slot."""
        cp.async_copy_global_to_shared(cs.index(slot * (BITS // 2)), Q + qo + G * BLK)
        if BITS == 4:
            cp.async_copy_global_to_shared(cs.index(slot * 2 + 1), Q + qo + G * BLK + 4)
        for q in gl.static_range(4):
            cp.async_copy_global_to_shared(xs.index(slot * 4 + q), X + xo + G * 64 + 4 * q, mask=xm)
        cp.async_copy_global_to_shared(ss.index(slot), S + so + G * SP)
        cp.commit_group()

    @gluon.jit
    def glop3_kernel(X, stride_xm, Q, S, AQ, OUT, stride_om, M, N, SP, NG,
                     NW: gl.constexpr, BITS: gl.constexpr, ZCK: gl.constexpr, ONE_ROW: gl.constexpr,
                     STAGES: gl.constexpr):
        """NW warps, one row tile each, over the whole K axis; group G's data is copied STAGES - 1
        groups before it is decoded."""
        LY: gl.constexpr = gl.BlockedLayout([1, 4], [1, 32], [NW, 1], [1, 0])
        SH: gl.constexpr = gl.SwizzledSharedLayout(1, 1, 1, [1, 0])
        WPL: gl.constexpr = 2 * BITS
        BLK: gl.constexpr = 64 * BITS
        pid_n = gl.program_id(0)
        g, c, e, ta, xo, xm, so = _lanes(pid_n, M, stride_xm, NW, LY)
        q64, q16, q4 = _quads(AQ, e, ta)
        qo = ta.to(gl.int64) * (NG * BLK) + (g * 4 + c) * WPL + e
        cs = gl.allocate_shared_memory(gl.int32, [STAGES * (BITS // 2), NW, 128], SH)
        xs = gl.allocate_shared_memory(gl.int32, [STAGES * 4, NW, 128], SH)
        ss = gl.allocate_shared_memory(gl.float16, [STAGES, NW, 128], SH)
        acc = gl.zeros([NW, 128], gl.float32, LY)
        for i in gl.static_range(STAGES - 1):
            _issue(cs, xs, ss, i, Q, X, S, qo, xo, so, xm, gl.minimum(i, NG - 1), SP, BLK, BITS)
        for G in range(0, NG):
            cp.wait_group(STAGES - 2)  # group G's copies (this thread's) have landed
            slot = G % STAGES
            w0 = cs.index(slot * (BITS // 2)).load(LY)
            w1 = w0
            if BITS == 4:
                w1 = cs.index(slot * 2 + 1).load(LY)
            x0 = xs.index(slot * 4).load(LY)
            x1 = xs.index(slot * 4 + 1).load(LY)
            x2 = xs.index(slot * 4 + 2).load(LY)
            x3 = xs.index(slot * 4 + 3).load(LY)
            s = ss.index(slot).load(LY)
            # the slot of group G - 1 (read above in the last iteration) takes group G + STAGES - 1
            _issue(cs, xs, ss, (G + STAGES - 1) % STAGES, Q, X, S, qo, xo, so, xm,
                   gl.minimum(G + STAGES - 1, NG - 1), SP, BLK, BITS)
            acc = _group_math(w0, w1, x0, x1, x2, x3, s, acc, q64, q16, q4, BITS, ZCK, ONE_ROW)
        cp.wait_group(0)
        orow = 16 * ta + 2 * g + e // 2
        ocol = 2 * c + e % 2
        gl.store(OUT + ocol * stride_om + orow, acc.to(gl.float16), mask=(ocol < M) & (orow < N))


    @gluon.jit
    def _finish(acc, ocol, orow, M, N, OUT, stride_om, WS, CNT, tile_id, pid_k, SPLIT_K):
        """The library kernel's finish (no bias, no scale): the partial to the workspace, a counter per
        program, the last program sums the partials in order and stores fp16."""
        finish(acc, ocol, orow, M, N, OUT, stride_om, OUT, WS, CNT, tile_id, pid_k, SPLIT_K, False, 1.0)

    @gluon.jit
    def _tma_issue(qd, cs, bars, slot, row0, G, NBYTES: gl.constexpr):
        mbarrier.expect(bars.index(slot), NBYTES)
        tma.async_copy_global_to_shared(qd, [row0, G, 0], bars.index(slot), cs.index(slot))

    @gluon.jit
    def _gload_x(X, xo, xm, G):
        p = X + xo + G * 64
        return (gl.load(p, mask=xm), gl.load(p + 4, mask=xm), gl.load(p + 8, mask=xm), gl.load(p + 12, mask=xm))

    @gluon.jit
    def tlop3_kernel(X, stride_xm, Q, S, AQ, OUT, stride_om, WS, CNT, M, N, SP, NG, GPS, SPLIT_K,
                     NW: gl.constexpr, BITS: gl.constexpr, ZCK: gl.constexpr, ONE_ROW: gl.constexpr,
                     STAGES: gl.constexpr):
        """The codes by TMA: one [NW tiles, 1 group, BLK words] box per group into a STAGES-deep ring
        (one mbarrier per slot, expect-tx bytes); the activations and scales by plain loads one
        group ahead; split-K as finish_tile (partials, a counter, the last program sums)."""
        LY: gl.constexpr = gl.BlockedLayout([1, 4], [1, 32], [NW, 1], [1, 0])
        LY8: gl.constexpr = gl.BlockedLayout([1, 8], [1, 32], [NW, 1], [1, 0])
        QL: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32, rank=3)
        BLK: gl.constexpr = 64 * BITS
        pid_n = gl.program_id(0)
        pid_k = gl.program_id(1)
        qd = tma.make_tensor_descriptor(Q, shape=[N // 16, NG, BLK], strides=[NG * BLK, BLK, 1],
                                        block_shape=[NW, 1, BLK], layout=QL)
        g, c, e, ta, xo, xm, so = _lanes(pid_n, M, stride_xm, NW, LY)
        q64, q16, q4 = _quads(AQ, e, ta)
        cs = gl.allocate_shared_memory(gl.int32, [STAGES, NW, 1, BLK], QL)
        bars = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(STAGES):
            mbarrier.init(bars.index(i), count=1)
        g0 = pid_k * GPS
        g1 = gl.minimum(g0 + GPS, NG)
        for i in gl.static_range(STAGES - 1):
            _tma_issue(qd, cs, bars, i, pid_n * NW, gl.minimum(g0 + i, g1 - 1), NW * BLK * 4)
        xs = _gload_x(X, xo, xm, g0)
        s = gl.load(S + so + g0 * SP)
        acc = gl.zeros([NW, 128], gl.float32, LY)
        for G in range(g0, g1):
            n = G - g0
            slot = n % STAGES
            # every warp has read the slot of group G - 1: it takes group G + STAGES - 1
            gl.thread_barrier()
            _tma_issue(qd, cs, bars, (n + STAGES - 1) % STAGES, pid_n * NW, gl.minimum(G + STAGES - 1, g1 - 1),
                       NW * BLK * 4)
            xn = _gload_x(X, xo, xm, gl.minimum(G + 1, g1 - 1))
            sn = gl.load(S + so + gl.minimum(G + 1, g1 - 1) * SP)
            mbarrier.wait(bars.index(slot), (n // STAGES) & 1)
            view = cs.index(slot).reshape([NW, BLK])
            if BITS == 2:
                w0 = view.load(LY)
                w1 = w0
            else:
                w0, w1 = gl.split(gl.reshape(view.load(LY8), [NW, 32, 2, 4]).permute(0, 1, 3, 2))
                w0 = gl.convert_layout(gl.reshape(w0, [NW, 128]), LY)
                w1 = gl.convert_layout(gl.reshape(w1, [NW, 128]), LY)
            x0, x1, x2, x3 = xs
            acc = _group_math(w0, w1, x0, x1, x2, x3, s, acc, q64, q16, q4, BITS, ZCK, ONE_ROW)
            xs = xn
            s = sn
        gl.thread_barrier()
        for j in range(g1 - g0, g1 - g0 + STAGES - 1):  # the refills past g1 land before the ring goes
            mbarrier.wait(bars.index(j % STAGES), (j // STAGES) & 1)
        orow = 16 * ta + 2 * g + e // 2
        ocol = 2 * c + e % 2
        _finish(acc, ocol, orow, M, N, OUT, stride_om, WS, CNT, pid_n, pid_k, SPLIT_K)


    @gluon.jit
    def _ws_producer(qd, cs, ready, empty, row0, g0, g1, STAGES: gl.constexpr, NBYTES: gl.constexpr):
        """One warp: the TMA of group G's codes into slot G % STAGES once the consumer has freed it."""
        for G in range(g0, g1):
            n = G - g0
            slot = n % STAGES
            mbarrier.wait(empty.index(slot), ((n // STAGES) - 1) & 1, pred=n >= STAGES)
            mbarrier.expect(ready.index(slot), NBYTES)
            tma.async_copy_global_to_shared(qd, [row0, G, 0], ready.index(slot), cs.index(slot))

    @gluon.jit
    def _ws_consumer(X, stride_xm, S, AQ, cs, ready, empty, M, SP, g0, g1, pid_n, BITS: gl.constexpr,
                     ZCK: gl.constexpr, ONE_ROW: gl.constexpr, STAGES: gl.constexpr):
        """Four warps, a row tile each: wait for a slot, read it, free it (after a barrier of the four),
        decode."""
        LY: gl.constexpr = gl.BlockedLayout([1, 4], [1, 32], [4, 1], [1, 0])
        LY8: gl.constexpr = gl.BlockedLayout([1, 8], [1, 32], [4, 1], [1, 0])
        BLK: gl.constexpr = 64 * BITS
        g, c, e, ta, xo, xm, so = _lanes(pid_n, M, stride_xm, 4, LY)
        q64, q16, q4 = _quads(AQ, e, ta)
        xs = _gload_x(X, xo, xm, g0)
        s = gl.load(S + so + g0 * SP)
        acc = gl.zeros([4, 128], gl.float32, LY)
        for G in range(g0, g1):
            n = G - g0
            slot = n % STAGES
            xn = _gload_x(X, xo, xm, gl.minimum(G + 1, g1 - 1))
            sn = gl.load(S + so + gl.minimum(G + 1, g1 - 1) * SP)
            mbarrier.wait(ready.index(slot), (n // STAGES) & 1)
            view = cs.index(slot).reshape([4, BLK])
            if BITS == 2:
                w0 = view.load(LY)
                w1 = w0
            else:
                w0, w1 = gl.split(gl.reshape(view.load(LY8), [4, 32, 2, 4]).permute(0, 1, 3, 2))
                w0 = gl.convert_layout(gl.reshape(w0, [4, 128]), LY)
                w1 = gl.convert_layout(gl.reshape(w1, [4, 128]), LY)
            gl.thread_barrier()  # all four warps have read the slot
            mbarrier.arrive(empty.index(slot), count=1)
            x0, x1, x2, x3 = xs
            acc = _group_math(w0, w1, x0, x1, x2, x3, s, acc, q64, q16, q4, BITS, ZCK, ONE_ROW)
            xs = xn
            s = sn
        return (acc,)

    @gluon.jit
    def wlop3_kernel(X, stride_xm, Q, S, AQ, OUT, stride_om, WS, CNT, M, N, SP, NG, GPS, SPLIT_K,
                     BITS: gl.constexpr, ZCK: gl.constexpr, ONE_ROW: gl.constexpr, STAGES: gl.constexpr):
        """tlop3_kernel with warp specialization: a producer warp issues the TMA ring, four consumer warps
        (the default partition, num_warps=4) decode a row tile each; one barrier of the four per group."""
        LY: gl.constexpr = gl.BlockedLayout([1, 4], [1, 32], [4, 1], [1, 0])
        QL: gl.constexpr = gl.NVMMASharedLayout(swizzle_byte_width=0, element_bitwidth=32, rank=3)
        BLK: gl.constexpr = 64 * BITS
        pid_n = gl.program_id(0)
        pid_k = gl.program_id(1)
        qd = tma.make_tensor_descriptor(Q, shape=[N // 16, NG, BLK], strides=[NG * BLK, BLK, 1],
                                        block_shape=[4, 1, BLK], layout=QL)
        cs = gl.allocate_shared_memory(gl.int32, [STAGES, 4, 1, BLK], QL)
        ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(STAGES):
            mbarrier.init(ready.index(i), count=1)
            mbarrier.init(empty.index(i), count=1)
        g0 = pid_k * GPS
        g1 = gl.minimum(g0 + GPS, NG)
        (acc,) = gl.warp_specialize([(_ws_consumer, (X, stride_xm, S, AQ, cs, ready, empty, M, SP, g0, g1, pid_n, BITS,
                                                  ZCK, ONE_ROW, STAGES)),
                                  (_ws_producer, (qd, cs, ready, empty, pid_n * 4, g0, g1, STAGES, 4 * BLK * 4))],
                                 [1], [24])
        g, c, e, ta, _, _, _ = _lanes(pid_n, M, stride_xm, 4, LY)
        orow = 16 * ta + 2 * g + e // 2
        ocol = 2 * c + e % 2 + ta * 0
        _finish(acc, ocol, orow, M, N, OUT, stride_om, WS, CNT, pid_n, pid_k, SPLIT_K)


def run(lw, x, out, warps=4, stages=4, split_k=1, ws=None, cnt=None):
    """glop3_kernel (cp.async ring, no split-K: ``split_k`` must be 1)."""
    assert split_k == 1, "glop3_kernel has no split-K"
    m = x.shape[0]
    grid = (lw.n // (16 * warps),)
    glop3_kernel[grid](x.view(torch.int32), x.stride(0), lw.q, lw.s, lw.aq, out, out.stride(0), m, lw.n, lw.sp,
                       lw.k // 128, NW=warps, BITS=lw.bits, ZCK=lw.zc, ONE_ROW=m == 1, STAGES=stages,
                       num_warps=warps)
    return out


def _split_buffers(lw, m, split_k, tiles, device):
    """The split-K workspace and per-program counters (the split rounded as the kernels round it)."""
    ng = lw.k // 128
    split_k = triton.cdiv(ng, triton.cdiv(ng, split_k))
    return (torch.empty(max(1, split_k * m * lw.n), device=device, dtype=torch.float32),
            torch.zeros(tiles, device=device, dtype=torch.int32))


def run_tma(lw, x, out, warps=4, stages=4, split_k=1, ws=None, cnt=None):
    """tlop3_kernel (2 / 4 bits, symmetric zero): its in-kernel TMA descriptor needs a global scratch
    allocator."""
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device=x.device))
    m = x.shape[0]
    ng = lw.k // 128
    gps = triton.cdiv(ng, split_k)
    split_k = triton.cdiv(ng, gps)
    grid = (lw.n // (16 * warps), split_k)
    if ws is None:
        ws, cnt = _split_buffers(lw, m, split_k, grid[0], x.device)
    tlop3_kernel[grid](x.view(torch.int32), x.stride(0), lw.q, lw.s, lw.aq, out, out.stride(0), ws, cnt, m, lw.n,
                       lw.sp, ng, gps, split_k, NW=warps, BITS=lw.bits, ZCK=lw.zc, ONE_ROW=m == 1, STAGES=stages,
                       num_warps=warps)
    return out


def run_ws(lw, x, out, warps=4, stages=4, split_k=1, ws=None, cnt=None, maxnreg=96):
    """wlop3_kernel: four consumer warps (num_warps=4) plus the producer warp; ``warps`` must be 4.
    Without a register cap the compiler reports 255 registers for it (one CTA per SM); 96 keeps
    the consumer loop as it is (1.89 / 2.11 instructions per weight offline) and fits four."""
    assert warps == 4, "wlop3_kernel's consumers are one warp group"
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device=x.device))
    m = x.shape[0]
    ng = lw.k // 128
    gps = triton.cdiv(ng, split_k)
    split_k = triton.cdiv(ng, gps)
    grid = (lw.n // 64, split_k)
    if ws is None:
        ws, cnt = _split_buffers(lw, m, split_k, grid[0], x.device)
    wlop3_kernel[grid](x.view(torch.int32), x.stride(0), lw.q, lw.s, lw.aq, out, out.stride(0), ws, cnt, m, lw.n,
                       lw.sp, ng, gps, split_k, BITS=lw.bits, ZCK=lw.zc, ONE_ROW=m == 1, STAGES=stages, num_warps=4,
                       maxnreg=maxnreg)
    return out


def compare(args, runner, checks, configs, name):
    """NaN-poisoned checks against float64 (launches ``checks``: (warps, stages, split_k)), then
    batch-1 timings against the library on ``args.shapes`` (``configs(n, groups)``: the launches
    tried); prints a table and writes lop3_NAME_TAG.json."""
    import kernel_bench as kb

    from matgptq.kernels.dispatch import choose_config, run_config

    worst = 0.0
    for bits in (2, 4):
        for n, k, m in ((4096, 14336, 1), (512, 2048, 3)):
            codes, s, z, x = L.random_case(n, k, bits, m, seed=n + k + bits, device="cuda", asym=False)
            ref = L.reference(codes, s, z, x)
            lw = L.Lop3Weight(codes, s, z, bits, float(1 << (bits - 1)))
            for warps, stages, sk in checks:
                out = torch.full((m, n), float("nan"), device="cuda", dtype=torch.float16)
                runner(lw, x, out, warps, stages, sk)
                err = ((out.double() - ref).abs().max() / ref.abs().max()).item()
                worst = max(worst, err) if err < 4e-3 else float("inf")
    print(f"{name} check: worst rel err {worst:.2e}", flush=True)
    bw, _ = kb.copy_bandwidth()
    rows = []
    for shape in args.shapes.split(","):
        n, k = (int(v) for v in shape.split("x"))
        for bits in (int(b) for b in args.bits.split(",")):
            pw0, _ = kb.make_packed(n, k, bits, "fixed", "nested", 128, seed=bits)
            copies = [pw0] + [kb.clone_packed(pw0) for _ in range(kb.copies_for(pw0.bytes_read(bits)) - 1)]
            x = torch.randn(1, k, device="cuda", dtype=torch.float16)
            outs = [torch.empty(1, n, device="cuda", dtype=torch.float16) for _ in copies]
            cfg = choose_config(x, pw0, bits)
            lib = kb.graph_time([lambda p=p, o=o: run_config(cfg, x, p, bits, o, None) for p, o in zip(copies, outs)])
            del copies
            codes, s, z, _ = L.random_case(n, k, bits, 1, seed=bits, device="cuda", asym=False)
            lw0 = L.Lop3Weight(codes, s, z, bits, float(1 << (bits - 1)))
            lws = [lw0] + [lw0.clone() for _ in range(kb.copies_for(lw0.bytes_read()) - 1)]
            tried = {}
            for warps, stages, sk in configs(n, k // 128):
                ws, cnt = _split_buffers(lw0, 1, sk, n // 16, "cuda")
                tried[f"w{warps}:st{stages}:sk{sk}"] = round(kb.graph_time(
                    [lambda lw=lw, o=o: runner(lw, x, o, warps, stages, sk, ws, cnt) for lw, o in zip(lws, outs)]), 2)
            best = min(tried, key=tried.get)
            pct = 100 * lw0.bytes_read() / (tried[best] * 1e-6) / bw
            rows.append(dict(shape=shape, bits=bits, lib_us=round(lib, 2), us=tried[best], config=best,
                             pct_copy=round(pct, 1), tried=tried))
            print(f"{shape:>11} {bits}-bit  library {lib:7.2f} µs  {name} {tried[best]:7.2f} µs ({pct:5.1f}%)  {tried}",
                  flush=True)
    if args.out:
        with open(os.path.join(args.out, f"lop3_{name}_{args.tag}.json"), "w") as f:
            json.dump(dict(copy_bw_GBps=round(bw / 1e9, 1), check_worst_rel_err=worst, rows=rows), f, indent=1)


def _splits(ng):
    """The two largest of 2, 4, 7, 8, 14 that divide the group count (no idle groups)."""
    return [v for v in (2, 4, 7, 8, 14) if ng % v == 0][-2:]


def sass_counts(bits, warps, stages, kernel="cp", maxnreg=None):
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    fn = {"cp": glop3_kernel, "tma": tlop3_kernel, "ws": wlop3_kernel}[kernel]
    names = fn.arg_names
    ptr = {"X": "*i32", "Q": "*i32", "S": "*fp16", "AQ": "*i32", "OUT": "*fp16", "WS": "*fp32", "CNT": "*i32"}
    cst = dict(NW=warps, BITS=bits, ZCK=float(1 << (bits - 1)), ONE_ROW=True, STAGES=stages)
    cst = {k: v for k, v in cst.items() if k in names}
    sig = {n: "constexpr" if n in cst else ptr.get(n, "i32") for n in names}
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in ("X", "stride_xm", "Q", "S", "AQ", "OUT",
                                                                    "stride_om", "N", "SP", "WS", "CNT") if n in names}
    src = GluonASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in cst.items()},
                         attrs=attrs)
    comp = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=warps) | ({"maxnreg": maxnreg} if maxnreg else {}))
    return L.per_weight(comp, 16 * 128 / 32, mmas=16)  # one group per iteration: 16 mmas


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sass", action="store_true")
    ap.add_argument("--tma", action="store_true", help="the TMA-ring kernel (tlop3_kernel) instead")
    ap.add_argument("--ws", action="store_true", help="the warp-specialized TMA kernel (wlop3_kernel) instead")
    ap.add_argument("--shapes", default="4096x14336,14336x4096,8192x8192,16384x16384")
    ap.add_argument("--bits", default="2,4")
    ap.add_argument("--out", default=None)
    ap.add_argument("--tag", default="h200")
    args = ap.parse_args()
    if args.sass:
        rows = []
        for kernel, bits, stages in itertools.product(("cp", "tma", "ws"), (2, 4), (4, 8)):
            regs, n, pw, mix = sass_counts(bits, 4, stages, kernel, 96 if kernel == "ws" else None)
            rows.append(dict(kernel=kernel, bits=bits, warps=4, stages=stages, registers=regs, loop=n,
                             per_weight=round(pw, 3), mix=mix))
            print(f"{kernel:3s} {bits}-bit stages {stages}: {regs} registers, loop {n} instructions per group and "
                  f"lane, {pw:.2f} per weight  {mix}", flush=True)
        if args.out:
            with open(os.path.join(args.out, "lop3_gluon_sass_triton36.json"), "w") as f:
                json.dump(rows, f, indent=1)
        return
    if args.tma:
        compare(args, run_tma, ((4, 4, 1), (4, 8, 4), (4, 4, 2)),
                lambda n, ng: [(4, st, sk) for st in (4, 8) for sk in _splits(ng)], "tma")
    elif args.ws:
        compare(args, run_ws, ((4, 4, 1), (4, 8, 4), (4, 4, 2)),
                lambda n, ng: [(4, st, sk) for st in (4, 8) for sk in _splits(ng)], "ws")
    else:
        compare(args, run, ((1, 3, 1), (4, 6, 1), (2, 8, 1)),
                lambda n, ng: [(w, st, 1) for w in (1, 4) for st in (4, 8) if n % (16 * w) == 0], "gluon")


if __name__ == "__main__":
    main()
