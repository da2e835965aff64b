"""Experiment: the lop3 layout's batch 1-8 kernel (``lop3_layout.py``) with its code, activation and
scale streams staged through shared memory by ``cp.async`` in a STAGES-deep ring (Gluon, Triton's
explicit-layout dialect), instead of held in registers.

``lop3_layout.py`` measured that kernel's mid shapes as bound by memory latency (with every stream
read from cache it ran in 7-10 µs, as is in 13-15): a register double buffer holds one or two
groups in flight per warp, and deeper register buffers cost registers and occupancy. Here every
lane copies its own 16-byte pieces (the same distributed layout for the copy and for the load
back), so a group's data can be STAGES - 1 groups ahead for the cost of shared memory only.

    PYTHONPATH=<Triton 3.6>:src python benchmarks/experiments/lop3_gluon.py --sass   # offline counts
    python benchmarks/experiments/lop3_gluon.py --out DIR                               # GPU: check, time

Not done: split-K (each program covers the whole K range, so mid shapes get few programs), tile
sets (TPW), zero points other than the one symmetric constant.
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
except ImportError:  # pragma: no cover
    gluon = None

if gluon is not None:

    @gluon.jit
    def _code2(w, xq, d, BITS: gl.constexpr, J0: gl.constexpr, FIRST: gl.constexpr):
        if FIRST:
            d = gl.inline_asm_elementwise(L._code_asm(BITS, J0, True), "=f,=f,=f,=f" + ",r" * 8, [w, xq],
                                          dtype=gl.float32, is_pure=True, pack=4)
        else:
            d = gl.inline_asm_elementwise(L._code_asm(BITS, J0, False), "=f,=f,=f,=f" + ",r" * 8 + ",f,f,f,f",
                                          [w, xq, d], dtype=gl.float32, is_pure=True, pack=4)
        return d

    @gluon.jit
    def _off2(qa, qb, xq, p, FIRST: gl.constexpr):
        if FIRST:
            p = gl.inline_asm_elementwise(L._off_asm(True), "=f,=f,=f,=f" + ",r" * 12, [qa, qb, xq],
                                          dtype=gl.float32, is_pure=True, pack=4)
        else:
            p = gl.inline_asm_elementwise(L._off_asm(False), "=f,=f,=f,=f" + ",r" * 12 + ",f,f,f,f",
                                          [qa, qb, xq, p], dtype=gl.float32, is_pure=True, pack=4)
        return p

    @gluon.jit
    def _quad(j: gl.constexpr, BITS: gl.constexpr, q64, q16, q4):
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
        T = gl.expand_dims(gl.arange(0, NW, layout=gl.SliceLayout(1, LY)), 1)
        E = gl.expand_dims(gl.arange(0, 128, layout=gl.SliceLayout(0, LY)), 0)
        Ln = E // 4
        g = Ln // 4
        c = Ln % 4
        e = E % 4
        ta = pid_n * NW + T
        qo = ta.to(gl.int64) * (NG * BLK) + Ln * WPL + e
        xo = gl.minimum(g, M - 1) * (stride_xm // 2) + 16 * c + e + T * 0
        xm = (g < M) & (T >= 0)
        so = ta * 16 + 2 * g + e
        q64 = gl.load(AQ + e + T * 0)
        q16 = gl.load(AQ + 4 + e + T * 0)
        q4 = gl.load(AQ + 8 + e + T * 0)
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
            p = _off2(_quad(0, BITS, q64, q16, q4), _quad(1, BITS, q64, q16, q4), x0, acc, True)
            p = _off2(_quad(2, BITS, q64, q16, q4), _quad(3, BITS, q64, q16, q4), x1, p, False)
            p = _off2(_quad(4, BITS, q64, q16, q4), _quad(5, BITS, q64, q16, q4), x2, p, False)
            p = _off2(_quad(6, BITS, q64, q16, q4), _quad(7, BITS, q64, q16, q4), x3, p, False)
            d = _code2(w0, x0, acc, BITS, 0, True)
            d = _code2(w0, x1, d, BITS, 2, False)
            d = _code2(w1, x2, d, BITS, 4, False)
            d = _code2(w1, x3, d, BITS, 6, False)
            acc = gl.inline_asm_elementwise(L._end_asm(ZCK, ONE_ROW), "=f,=f,=f,=f" + ",f" * 8 + ",r,r" + ",f" * 4,
                                            [d, p, s, acc], dtype=gl.float32, is_pure=True, pack=4)
        cp.wait_group(0)
        orow = 16 * ta + 2 * g + e // 2
        ocol = 2 * c + e % 2
        gl.store(OUT + ocol * stride_om + orow, acc.to(gl.float16), mask=(ocol < M) & (orow < N))


def run(lw, x, out, warps=4, stages=4):
    m = x.shape[0]
    grid = (lw.n // (16 * warps),)
    glop3_kernel[grid](x.view(torch.int32), x.stride(0), lw.q, lw.s, lw.aq, out, out.stride(0), m, lw.n, lw.sp,
                       lw.k // 128, NW=warps, BITS=lw.bits, ZCK=lw.zc, ONE_ROW=m == 1, STAGES=stages,
                       num_warps=warps)
    return out


def sass_counts(bits, warps, stages):
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    fn = glop3_kernel
    names = fn.arg_names
    ptr = {"X": "*i32", "Q": "*i32", "S": "*fp16", "AQ": "*i32", "OUT": "*fp16"}
    cst = dict(NW=warps, BITS=bits, ZCK=float(1 << (bits - 1)), ONE_ROW=True, STAGES=stages)
    sig = {n: "constexpr" if n in cst else ptr.get(n, "i32") for n in names}
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in ("X", "stride_xm", "Q", "S", "AQ", "OUT",
                                                                    "stride_om", "N", "SP")}
    src = GluonASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in cst.items()},
                         attrs=attrs)
    comp = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps))
    return L.per_weight(comp, 16 * 128 / 32)  # one group per iteration


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sass", action="store_true")
    ap.add_argument("--shapes", default="4096x14336,14336x4096,8192x8192,16384x16384")
    ap.add_argument("--bits", default="2,4")
    ap.add_argument("--out", default=None)
    ap.add_argument("--tag", default="h200")
    args = ap.parse_args()
    if args.sass:
        for bits, warps, stages in itertools.product((2, 4), (4,), (3, 4, 6)):
            print(bits, warps, stages, sass_counts(bits, warps, stages), flush=True)
        return
    import kernels as kb

    from matgptq.kernels.dispatch import choose_config, run_config

    worst = 0.0
    for bits in (2, 4):
        for n, k, m in ((4096, 14336, 1), (512, 2048, 3)):
            codes, s, z, x = L.random_case(n, k, bits, m, seed=n + k + bits, device="cuda", asym=False)
            ref = L.reference(codes, s, z, x)
            lw = L.Lop3Weight(codes, s, z, bits, float(1 << (bits - 1)))
            for warps, stages in ((1, 3), (4, 6), (2, 8)):
                out = torch.full((m, n), float("nan"), device="cuda", dtype=torch.float16)
                run(lw, x, out, warps, stages)
                err = ((out.double() - ref).abs().max() / ref.abs().max()).item()
                worst = max(worst, err) if err < 4e-3 else float("inf")
    print(f"GPU check: worst rel err {worst:.2e}", flush=True)
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
            for warps, stages in itertools.product((1, 4), (4, 8)):
                if n % (16 * warps):
                    continue
                tried[f"w{warps}:st{stages}"] = round(kb.graph_time(
                    [lambda lw=lw, o=o: run(lw, x, o, warps, stages) for lw, o in zip(lws, outs)]), 2)
            best = min(tried, key=tried.get)
            pct = 100 * lw0.bytes_read() / (tried[best] * 1e-6) / bw
            rows.append(dict(shape=shape, bits=bits, lib_us=round(lib, 2), us=tried[best], config=best,
                             pct_copy=round(pct, 1), tried=tried))
            print(f"{shape:>11} {bits}-bit  library {lib:7.2f} µs  gluon {tried[best]:7.2f} µs ({pct:5.1f}%)  {best}",
                  flush=True)
    if args.out:
        with open(os.path.join(args.out, f"lop3_gluon_{args.tag}.json"), "w") as f:
            json.dump(dict(copy_bw_GBps=round(bw / 1e9, 1), check_worst_rel_err=worst, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
