"""Experiment: a fixed-width layout made for a one-instruction decode, and a batch 1-8 mma kernel on it.

The library's mma kernel spends about 1.0 of its ~1.9 instructions per weight (SASS, per thread) on
the decode: bit fields moved into bytes, then one byte permute per fp16 pair. Here the packing puts
the two codes of every A-fragment register of an ``mma.m16n8k16`` at bits p and 16 + p of one
32-bit word, so a single ``lop3`` (w & mask_p) | magic_p makes the exact fp16 pair
(2^(10-p) + k, 2^(10-p) + k'): no gathering, no permutes. A lane's words hold its four A
registers (a0..a3) of all eight 16-column steps of a 128-column group; step j reads field j
of the same words (2 bits: from w << 4, w or w >> 6, so p is 4, 6 or 8; 4 bits: two sets of
words, p = 4 from w << 4, w, w >> 4, w >> 8). The offsets 2^(10-p) leave the sums through a
second mma whose A is 1 on rows 0-7 and the step's offset on rows 8-15: its result rows give the
group's sum of x and its offset-weighted sum, and a group ends with
acc += s * (d - offsum - z * sum_x) per register, in fp32.

Layout (2 bits; 4 bits in ``pack``): row tile t (rows 16t..16t+15), group G (columns 128G..),
lane l = 4g + c, word r = 2 r1 + r0 holds row 16t + 2g + r0 (mma row g + 8 r0) at columns
128G + 32c + 4j + 2 r1 + h in field j of half h. Lane l's x for a group is the 32 contiguous
columns 128G + 32c .. +31 (four 16-byte loads).

    python benchmarks/experiments/lop3_layout.py --emulate              # CPU: layout + math vs float64
    PYTHONPATH=<Triton 3.6>:src python benchmarks/experiments/lop3_layout.py --sass   # offline SASS counts
    python benchmarks/experiments/lop3_layout.py --out DIR              # GPU: check, then time vs the library

Not in the library: the zero point of the nested rule, 3/6/8 bits, batches above 8, masked
tails, the interpreter path and the other kernels (gemv, gemm) on this layout.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from matgptq.kernels.lop3_pack import P2, SH2, SH4  # noqa: E402,F401  (the layout's steps: the library's)
from matgptq.kernels.lop3_pack import step_offsets as offsets  # noqa: E402

ONE = 0x3C003C00


def _split(codes, bits):
    """codes [N, K] -> [t, g, r0, G, c, u, f, r1, h]: u, f the word set and field of step j = 4u + f
    (2 bits: u = 0, f = j)."""
    n, k = codes.shape
    nf = 16 // bits  # fields per 16-bit half: 8 (2 bits) or 4 (4 bits)
    nu = 8 // nf
    return codes.view(n // 16, 8, 2, k // 128, 4, nu, nf, 2, 2), nf, nu


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """codes [N, K] uint8 (< 2^bits) -> int32 [N/16, K/128, 32 lanes, 2*bits words]."""
    c, nf, nu = _split(codes.to(torch.int64), bits)
    # -> [t, G, g, c, u, r1, r0, h, f]
    c = c.permute(0, 3, 1, 4, 5, 7, 2, 8, 6)
    sh = (16 * torch.arange(2, device=codes.device)[:, None] + bits * torch.arange(nf, device=codes.device)[None, :])
    w = (c << sh).sum(dim=(-1, -2))  # [t, G, g, c, u, r1, r0]
    w = torch.where(w >= 1 << 31, w - (1 << 32), w).to(torch.int32)
    return w.reshape(codes.shape[0] // 16, codes.shape[1] // 128, 32, 2 * bits).contiguous()


def emulate(q, s, z, x, bits):
    """What the kernel computes, lane by lane, in float64: the A / B fragments built from the packed
    words and the activations as the PTX defines them (lane 4g + c: a0 = A[g][2c, 2c+1], a1 =
    A[g+8][..], a2 = A[g][2c+8, 2c+9], a3 = A[g+8][..]; b0 = B[2c, 2c+1][g], b1 = B[2c+8, 2c+9][g])."""
    nt, ng = q.shape[:2]
    m = x.shape[0]
    w = q.to(torch.int64) & 0xFFFFFFFF  # [t, G, l, words]
    out = torch.zeros(m, nt * 16, dtype=torch.float64)
    offs = offsets(bits)
    g = torch.arange(8)
    for j in range(8):
        if bits == 2:
            sh, p, base = SH2[j], P2[j], 0
        else:
            sh, p, base = SH4[j % 4], 4, 4 * (j // 4)
        v = w[..., base:base + 4]
        v = (v << sh) & 0xFFFFFFFF if sh >= 0 else v >> -sh
        mask = ((1 << bits) - 1) << p
        lo = ((v & mask) >> p).double() + offs[j]  # exact value of the fp16 (2^(10-p) + k)
        hi = (((v >> 16) & mask) >> p).double() + offs[j]
        # A_j [t, G, 16, 16]
        a = torch.zeros(nt, ng, 16, 16, dtype=torch.float64)
        lane = lo.view(nt, ng, 8, 4, 4)  # [t, G, g, c, r]
        lanh = hi.view(nt, ng, 8, 4, 4)
        for cc in range(4):
            for r in range(4):
                mrow = g + 8 * (r & 1)
                k0 = 2 * cc + 8 * (r >> 1)
                a[:, :, mrow, k0] = lane[:, :, :, cc, r]
                a[:, :, mrow, k0 + 1] = lanh[:, :, :, cc, r]
        # B_j [G, 16, m]: logical k = 2c + t (t<2) <-> column 32c + 4j + t, k = 2c + 8 + t <-> 32c + 4j + 2 + t
        xb = torch.zeros(ng, 16, m, dtype=torch.float64)
        xg = x.double().view(m, ng, 4, 8, 4)  # [n, G, c, j, 4]
        for cc in range(4):
            for t in range(2):
                xb[:, 2 * cc + t] = xg[:, :, cc, j, t].t()
                xb[:, 2 * cc + 8 + t] = xg[:, :, cc, j, 2 + t].t()
        d = torch.einsum("tgmk,gkn->tgmn", a, xb)  # [t, G, 16, m]
        xs = xb.sum(1)  # [G, m]
        if j == 0:
            dd, xsum, osum = d, xs.clone(), offs[j] * xs
        else:
            dd, xsum, osum = dd + d, xsum + xs, osum + offs[j] * xs
    # mma row mr of tile t is row 16t + 2(mr % 8) + mr // 8
    rows = (16 * torch.arange(nt)[:, None] + 2 * (torch.arange(16) % 8)[None, :] + (torch.arange(16) // 8)[None, :])
    sr = s.double().t()[rows]  # [t, 16, G]
    zr = z.double().t()[rows]
    tot = sr[..., None] * (dd.permute(0, 2, 1, 3) - osum[None, None] - zr[..., None] * xsum[None, None])
    out[:, rows.reshape(-1)] = tot.sum(2).reshape(-1, m).t()
    return out


def random_case(n, k, bits, m, seed=0, device="cpu", asym=True):
    gen = torch.Generator(device=device).manual_seed(seed)
    codes = torch.randint(0, 1 << bits, (n, k), generator=gen, dtype=torch.uint8, device=device)
    s = (torch.rand(k // 128, n, generator=gen, device=device) * 0.02 + 1e-3).half()
    if asym:
        z = torch.randint(0, 1 << bits, (k // 128, n), generator=gen, device=device).to(torch.uint8)
    else:
        z = torch.full((k // 128, n), (1 << bits) // 2, dtype=torch.uint8, device=device)
    x = torch.randn(m, k, generator=gen, device=device).half()
    return codes, s, z, x


def reference(codes, s, z, x):
    """float64 x @ W^T with W = s * (code - z), scales / zeros [groups, N]."""
    sf = s.double().t().repeat_interleave(128, dim=1)
    zf = z.double().t().repeat_interleave(128, dim=1)
    return x.double() @ (sf * (codes.double() - zf)).t()


# ---------------------------------------------------------------------------------------------
# the kernel

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = None

if triton is not None:
    from matgptq.kernels.lop3_asm import code_asm as _code_asm  # noqa: F401  (the decode-and-mma text)
    from matgptq.kernels.lop3_asm import off_asm as _off_asm  # noqa: F401
    from matgptq.kernels.triton_decode import finish_tile, issue_here

    @triton.constexpr_function
    def _end_asm(zc, one_row):
        """A group's end: $4-7 the code sums d, $8-11 the offset mma's (sum x of batch 2c, 2c+1, then
        the offset sums), $12-13 the scales of rows 2g .. 2g+3 (fp16 pairs; rows 2g, 2g+1 used), then
        (zc None) their zeros (four u8 in $14) and acc; zc a float: the one symmetric zero.
        $0-3 the new acc."""
        a = 14 if zc is not None else 15
        lines = ["{", ".reg .f32 s0, s1, z0, z1, t<4>;", ".reg .b16 h0, h1;", ".reg .b32 q;",
                 "mov.b32 {h0, h1}, $12;", "cvt.f32.f16 s0, h0;", "cvt.f32.f16 s1, h1;"]
        if zc is not None:
            bits = __import__("struct").unpack("I", __import__("struct").pack("f", float(zc)))[0]
            lines += [f"mov.b32 z0, 0f{bits:08X};", "mov.b32 z1, z0;"]
        else:
            lines += ["and.b32 q, $14, 255;", "cvt.rn.f32.u32 z0, q;", "bfe.u32 q, $14, 8, 8;",
                      "cvt.rn.f32.u32 z1, q;"]
        for e in range(4):
            if one_row and e % 2:
                lines.append(f"mov.f32 ${e}, ${a + e};")
                continue
            zz, ss, b = ("z0", "s0", e % 2) if e < 2 else ("z1", "s1", e % 2)
            lines.append(f"fma.rn.f32 t{e}, {zz}, ${8 + b}, ${10 + b};")
            lines.append(f"sub.f32 t{e}, ${4 + e}, t{e};")
            lines.append(f"fma.rn.f32 ${e}, {ss}, t{e}, ${a + e};")
        lines.append("}")
        return "\n".join(lines)

    @triton.jit
    def _end(d, p, s, z, acc, ZCK: tl.constexpr, ONE_ROW: tl.constexpr):
        if ZCK is None:
            acc = tl.inline_asm_elementwise(_end_asm(None, ONE_ROW), "=f,=f,=f,=f" + ",f" * 8 + ",r,r,r" + ",f" * 4,
                                            [d, p, s, z, acc], dtype=tl.float32, is_pure=True, pack=4)
        else:
            acc = tl.inline_asm_elementwise(_end_asm(ZCK, ONE_ROW), "=f,=f,=f,=f" + ",f" * 8 + ",r,r" + ",f" * 4,
                                            [d, p, s, acc], dtype=tl.float32, is_pure=True, pack=4)
        return acc

    @triton.jit
    def _code2(w, xq, d, BITS: tl.constexpr, J0: tl.constexpr, FIRST: tl.constexpr):
        if FIRST:
            d = tl.inline_asm_elementwise(_code_asm(BITS, J0, True), "=f,=f,=f,=f" + ",r" * 8, [w, xq],
                                          dtype=tl.float32, is_pure=True, pack=4)
        else:
            d = tl.inline_asm_elementwise(_code_asm(BITS, J0, False), "=f,=f,=f,=f" + ",r" * 8 + ",f,f,f,f",
                                          [w, xq, d], dtype=tl.float32, is_pure=True, pack=4)
        return d

    @triton.jit
    def _off2(qa, qb, xq, p, FIRST: tl.constexpr):
        if FIRST:
            p = tl.inline_asm_elementwise(_off_asm(True), "=f,=f,=f,=f" + ",r" * 12, [qa, qb, xq],
                                          dtype=tl.float32, is_pure=True, pack=4)
        else:
            p = tl.inline_asm_elementwise(_off_asm(False), "=f,=f,=f,=f" + ",r" * 12 + ",f,f,f,f",
                                          [qa, qb, xq, p], dtype=tl.float32, is_pure=True, pack=4)
        return p

    @triton.jit
    def _quad(j: tl.constexpr, BITS: tl.constexpr, q64, q16, q4):
        """The A quad {1, offset, 1, offset} of step j: offset 2^(10 - p) for its field's bit p."""
        if BITS == 4:
            r = q64
        elif j == 4 or j == 7:  # p = 8
            r = q4
        elif j == 1 or j == 3 or j == 6:  # p = 6
            r = q16
        else:  # p = 4
            r = q64
        return r

    @triton.jit
    def _codes(w0, w1, x0, x1, x2, x3, BITS: tl.constexpr):
        """One 128-column group of one row tile: the code sums of its eight steps."""
        d = _code2(w0, x0, x0.to(tl.float32), BITS, 0, True)
        d = _code2(w0, x1, d, BITS, 2, False)
        d = _code2(w1, x2, d, BITS, 4, False)
        return _code2(w1, x3, d, BITS, 6, False)

    @triton.jit
    def _offsets(x0, x1, x2, x3, q64, q16, q4, BITS: tl.constexpr):
        """The group's offset mma (shared by every row tile of the warp): sum x and sum offset * x."""
        p = _off2(_quad(0, BITS, q64, q16, q4), _quad(1, BITS, q64, q16, q4), x0, x0.to(tl.float32), True)
        p = _off2(_quad(2, BITS, q64, q16, q4), _quad(3, BITS, q64, q16, q4), x1, p, False)
        p = _off2(_quad(4, BITS, q64, q16, q4), _quad(5, BITS, q64, q16, q4), x2, p, False)
        return _off2(_quad(6, BITS, q64, q16, q4), _quad(7, BITS, q64, q16, q4), x3, p, False)

    @triton.jit
    def _tile_codes(Q, S, Z, qo, so, G, ok, SP, BLK: tl.constexpr, BITS: tl.constexpr, ZCK: tl.constexpr):
        """One tile set's words (two sets at 4 bits), scales (0 unless ok) and zeros of group G."""
        w0 = tl.load(Q + qo + G * BLK)
        w1 = w0
        if BITS == 4:
            w1 = tl.load(Q + qo + G * BLK + 4)
        s = tl.load(S + so + G * SP, mask=ok, other=0.0)
        z = s
        if ZCK is None:
            z = tl.load(Z + so + G * SP)
        return w0, w1, s, z

    @triton.jit
    def _load_codes(Q, S, Z, qa, qb, sa, sb, G, g1, SP, BLK: tl.constexpr, BITS: tl.constexpr,
                    TPW: tl.constexpr, ZCK: tl.constexpr, DIAG: tl.constexpr = 0, g0=0):
        """Group G's codes (tile sets a, b), scales and zeros: clamped to the program's last group, and
        the scales 0 past it (such a group contributes nothing). DIAG & 2 (timing only, wrong
        results): every group reads the program's first group's codes (cache hits)."""
        ok = G < g1
        G = tl.minimum(G, g1 - 1)
        if DIAG & 2:
            G = g0
        wa0, wa1, s0, z0 = _tile_codes(Q, S, Z, qa, sa, G, ok, SP, BLK, BITS, ZCK)
        wb0, wb1, s1, z1 = wa0, wa1, s0, z0
        if TPW == 2:
            wb0, wb1, s1, z1 = _tile_codes(Q, S, Z, qb, sb, G, ok, SP, BLK, BITS, ZCK)
        return wa0, wa1, wb0, wb1, s0, s1, z0, z1

    @triton.jit
    def _load_half(Q, S, Z, qa, qb, sa, sb, G, g1, SP, BLK: tl.constexpr, BITS: tl.constexpr,
                   TPW: tl.constexpr, ZCK: tl.constexpr, U: tl.constexpr, DIAG: tl.constexpr = 0, g0=0):
        """The codes of groups G .. G + U - 1 (U = 1, 2 or 4), all loads issued together."""
        c0 = _load_codes(Q, S, Z, qa, qb, sa, sb, G, g1, SP, BLK, BITS, TPW, ZCK, DIAG, g0)
        c1, c2, c3 = c0, c0, c0
        if U >= 2:
            c1 = _load_codes(Q, S, Z, qa, qb, sa, sb, G + 1, g1, SP, BLK, BITS, TPW, ZCK, DIAG, g0)
        if U == 4:
            c2 = _load_codes(Q, S, Z, qa, qb, sa, sb, G + 2, g1, SP, BLK, BITS, TPW, ZCK, DIAG, g0)
            c3 = _load_codes(Q, S, Z, qa, qb, sa, sb, G + 3, g1, SP, BLK, BITS, TPW, ZCK, DIAG, g0)
        return c0, c1, c2, c3

    @triton.jit
    def _load_x(X, xo, G, g1, DIAG: tl.constexpr = 0, g0=0, xm=None):
        """DIAG & 1 (timing only): the program's first group's activations for every group. xm: the
        lanes of batch rows < M; the others load nothing (their registers stay undefined: they only
        feed mma columns that are never stored), so a batch-1 warp asks memory for 256 bytes of x
        per group instead of eight copies of it."""
        G = tl.minimum(G, g1 - 1)
        if DIAG & 1:
            G = g0
        p = X + xo + G * 64
        if xm is None:
            r = (tl.load(p), tl.load(p + 4), tl.load(p + 8), tl.load(p + 12))
        else:
            r = (tl.load(p, mask=xm), tl.load(p + 4, mask=xm), tl.load(p + 8, mask=xm), tl.load(p + 12, mask=xm))
        return r

    @triton.jit
    def _do_group(cw, xs, q64, q16, q4, acca, accb,
                  BITS: tl.constexpr, TPW: tl.constexpr, ZCK: tl.constexpr, ONE_ROW: tl.constexpr):
        wa0, wa1, wb0, wb1, s0, s1, z0, z1 = cw
        x0, x1, x2, x3 = xs
        p = _offsets(x0, x1, x2, x3, q64, q16, q4, BITS)
        acca = _end(_codes(wa0, wa1, x0, x1, x2, x3, BITS), p, s0, z0, acca, ZCK, ONE_ROW)
        if TPW == 2:
            accb = _end(_codes(wb0, wb1, x0, x1, x2, x3, BITS), p, s1, z1, accb, ZCK, ONE_ROW)
        return acca, accb

    @triton.jit
    def _load_xhalf(X, xo, G, g1, U: tl.constexpr, XB: tl.constexpr, DIAG: tl.constexpr, g0, xm):
        """XB: the activations of groups G .. G + U - 1, loaded with their codes."""
        x0 = _load_x(X, xo, G, g1, DIAG, g0, xm)
        x1, x2, x3 = x0, x0, x0
        if XB:
            if U >= 2:
                x1 = _load_x(X, xo, G + 1, g1, DIAG, g0, xm)
            if U == 4:
                x2 = _load_x(X, xo, G + 2, g1, DIAG, g0, xm)
                x3 = _load_x(X, xo, G + 3, g1, DIAG, g0, xm)
        return x0, x1, x2, x3

    @triton.jit
    def _do_half(X, xo, G, g1, buf, xs, xbuf, q64, q16, q4, acca, accb, BITS: tl.constexpr, TPW: tl.constexpr,
                 ZCK: tl.constexpr, ONE_ROW: tl.constexpr, U: tl.constexpr, XB: tl.constexpr,
                 DIAG: tl.constexpr, g0, xm):
        """Groups G .. G + U - 1 from buf; the activations from xbuf (XB) or loaded one group ahead."""
        for u in tl.static_range(U):
            if XB:
                acca, accb = _do_group(buf[u], xbuf[u], q64, q16, q4, acca, accb, BITS, TPW, ZCK, ONE_ROW)
            else:
                xn = _load_x(X, xo, G + u + 1, g1, DIAG, g0, xm)
                acca, accb = _do_group(buf[u], xs, q64, q16, q4, acca, accb, BITS, TPW, ZCK, ONE_ROW)
                xs = xn
        return acca, accb, xs

    @triton.jit(do_not_specialize=["M", "NG", "GPS", "SPLIT_K"])
    def lop3_kernel(X, stride_xm, Q, S, Z, AQ, OUT, stride_om, WS, CNT, M, N, SP, NG, GPS, SPLIT_K,
                    NW: tl.constexpr, TPW: tl.constexpr, BITS: tl.constexpr, ZCK: tl.constexpr,
                    ONE_ROW: tl.constexpr, U: tl.constexpr = 1, XB: tl.constexpr = 0, DIAG: tl.constexpr = 0,
                    XM: tl.constexpr = 0):
        """NW warps (one [NW, 128] tensor row each) times TPW row tiles per warp (tile sets a, b, which
        share the activations and the offset mma); groups GPS * pid_k .. of the K axis (split-K),
        2U per iteration: the codes of U groups (half b) are loaded while the U groups of half a are
        decoded, and the other way round; the activations one group ahead."""
        pid_n = tl.program_id(0)
        pid_k = tl.program_id(1)
        WPL: tl.constexpr = 2 * BITS  # words per lane and group
        BLK: tl.constexpr = 64 * BITS  # words per (row tile, group)
        T = tl.arange(0, NW)[:, None]
        E = tl.arange(0, 128)[None, :]
        L = E // 4
        g = L // 4
        c = L % 4
        e = E % 4
        ta = pid_n * (NW * TPW) + T  # the warp's row tiles: ta and ta + NW
        tb = ta + NW
        qa = ta.to(tl.int64) * (NG * BLK) + L * WPL + e  # + G * BLK (+ 4: the second word set)
        qb = tb.to(tl.int64) * (NG * BLK) + L * WPL + e
        xo = tl.minimum(g, M - 1) * (stride_xm // 2) + 16 * c + e + T * 0  # int32 units; + 64 G + 4 q
        xm = None
        if XM:  # only the lanes of real batch rows load activations
            xm = (g < M) & (T >= 0)
        sa = ta * 16 + 2 * g + e  # rows 2g .. 2g+3 of the tile (scales / zeros padded by 8); + G * SP
        sb = tb * 16 + 2 * g + e
        q64 = tl.load(AQ + e + T * 0)  # {1, 64, 1, 64}, loaded: registers, not rebuilt constants
        q16 = tl.load(AQ + 4 + e + T * 0)
        q4 = tl.load(AQ + 8 + e + T * 0)
        acca = tl.zeros([NW, 128], dtype=tl.float32)
        accb = acca
        g0 = pid_k * GPS
        g1 = tl.minimum(g0 + GPS, NG)
        bufa = _load_half(Q, S, Z, qa, qb, sa, sb, g0, g1, SP, BLK, BITS, TPW, ZCK, U, DIAG, g0)
        xa = _load_xhalf(X, xo, g0, g1, U, XB, DIAG, g0, xm)
        xs = xa[0]
        for G in range(g0, g1, 2 * U):
            bufb = _load_half(Q, S, Z, qa, qb, sa, sb, G + U, g1, SP, BLK, BITS, TPW, ZCK, U, DIAG, g0)
            if XB:
                xb = _load_xhalf(X, xo, G + U, g1, U, XB, DIAG, g0, xm)
            else:
                xb = xa
            G = issue_here(G)
            acca, accb, xs = _do_half(X, xo, G, g1, bufa, xs, xa, q64, q16, q4, acca, accb, BITS, TPW, ZCK, ONE_ROW,
                                      U, XB, DIAG, g0, xm)
            bufa = _load_half(Q, S, Z, qa, qb, sa, sb, G + 2 * U, g1, SP, BLK, BITS, TPW, ZCK, U, DIAG, g0)
            if XB:
                xa = _load_xhalf(X, xo, G + 2 * U, g1, U, XB, DIAG, g0, xm)
            G = issue_here(G)
            acca, accb, xs = _do_half(X, xo, G + U, g1, bufb, xs, xb, q64, q16, q4, acca, accb, BITS, TPW, ZCK,
                                      ONE_ROW, U, XB, DIAG, g0, xm)
        ocol = 2 * c + e % 2
        finish_tile(acca, ocol, 16 * ta + 2 * g + e // 2, M, N, OUT, stride_om, OUT, WS, CNT, 2 * pid_n, pid_k,
                    SPLIT_K, False)
        if TPW == 2:
            finish_tile(accb, ocol, 16 * tb + 2 * g + e // 2, M, N, OUT, stride_om, OUT, WS, CNT, 2 * pid_n + 1,
                        pid_k, SPLIT_K, False)


def aq_table(device):
    one = 0x3C00
    vals = []
    for off in (0x5400, 0x4C00, 0x4400):  # 64, 16, 4 in fp16
        vals += [one * 0x10001, off * 0x10001, one * 0x10001, off * 0x10001]
    vals = [v - (1 << 32) if v >= 1 << 31 else v for v in vals]
    return torch.tensor(vals, dtype=torch.int32, device=device)


class Lop3Weight:
    """Packed codes plus scales / zeros [groups, N] stored with 8 elements of padding per group
    row (a lane reads rows 2g .. 2g+3: four contiguous values, no mask); zeros None with
    ``sym_zero``: one constant zero for every group (the benchmark's symmetric case)."""

    def __init__(self, codes, s, z, bits, sym_zero=None):
        self.n, self.k = codes.shape
        self.bits = bits
        self.q = pack(codes, bits)
        self.sp = self.n + 16  # a multiple of 16 like n: aligned 8-byte reads
        self.s = torch.nn.functional.pad(s, (0, 16)).contiguous()
        self.z = None if sym_zero is not None else torch.nn.functional.pad(z, (0, 16)).contiguous()
        self.zc = sym_zero
        self.aq = aq_table(codes.device)

    def bytes_read(self):
        """Bytes the format needs: codes, fp16 scales, u8 zeros (the 16 elements of row padding in the
        scale buffer are not counted)."""
        ng = self.k // 128
        return self.q.numel() * 4 + ng * self.n * 2 + (0 if self.z is None else ng * self.n)

    def clone(self):
        c = object.__new__(Lop3Weight)
        c.__dict__.update(self.__dict__)
        c.q, c.s = self.q.clone(), self.s.clone()
        c.z = None if self.z is None else self.z.clone()
        return c


def run(lw, x, out, warps=2, tpw=1, split_k=1, ws=None, cnt=None, u=1, xb=0, diag=0, xm=0):
    """out[M, N] = x[M, K] @ W^T for M <= 8 (fp16)."""
    m = x.shape[0]
    ng = lw.k // 128
    gps = triton.cdiv(ng, split_k)
    split_k = triton.cdiv(ng, gps)
    grid = (lw.n // (16 * warps * tpw), split_k)
    if split_k > 1 and ws is None:
        ws = torch.empty(split_k * m * lw.n, device=x.device, dtype=torch.float32)
        cnt = torch.zeros(2 * grid[0], device=x.device, dtype=torch.int32)
    elif ws is None:  # split_k 1: never touched, but typed as the split-K path expects
        ws = torch.empty(1, device=x.device, dtype=torch.float32)
        cnt = torch.zeros(1, device=x.device, dtype=torch.int32)
    lop3_kernel[grid](x.view(torch.int32), x.stride(0), lw.q, lw.s, lw.s if lw.z is None else lw.z, lw.aq, out,
                      out.stride(0), ws, cnt, m, lw.n, lw.sp, ng, gps, split_k,
                      NW=warps, TPW=tpw, BITS=lw.bits, ZCK=lw.zc, ONE_ROW=m == 1, U=u, XB=xb, DIAG=diag, XM=xm, num_warps=warps, num_stages=1)
    return out


# ---------------------------------------------------------------------------------------------
# modes

def check_emulator():
    worst = 0.0
    for bits in (2, 4):
        for n, k, m, asym in ((32, 256, 1, True), (48, 384, 3, True), (16, 128, 8, False)):
            codes, s, z, x = random_case(n, k, bits, m, seed=n + k + bits)
            ref = reference(codes, s, z, x)
            got = emulate(pack(codes, bits), s, z, x, bits)
            err = ((got - ref).abs().max() / ref.abs().max()).item()
            worst = max(worst, err)
            print(f"emulate {bits}-bit {n}x{k} batch {m}{' asym' if asym else ''}: max rel err {err:.2e}")
    assert worst < 1e-12, worst
    codes, s, z, x = random_case(32, 256, 2, 3, seed=1)
    swapped = pack(codes, 2)[..., [1, 0, 2, 3]].contiguous()  # words of rows r and r + 8 of a lane swapped
    ref = reference(codes, s, z, x)
    bad = ((emulate(swapped, s, z, x, 2) - ref).abs().max() / ref.abs().max()).item()
    print(f"emulator matches float64: layout and offsets are exact (two words swapped: rel err {bad:.2f})")


def sass_counts(bits, tpw, warps, zck=2.0, one_row=True, u=1, xb=0, diag=0, xm=0):
    """Registers and per-weight SASS of the group loop, compiled offline for sm_90."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = lop3_kernel
    names = fn.arg_names
    ptr = {"X": "*i32", "Q": "*i32", "S": "*fp16", "Z": "*u8", "AQ": "*i32", "OUT": "*fp16", "WS": "*fp32",
           "CNT": "*i32"}
    cst = dict(NW=warps, TPW=tpw, BITS=bits, ZCK=zck, ONE_ROW=one_row, U=u, XB=xb, DIAG=diag, XM=xm)
    sig = {n: "constexpr" if n in cst else ptr.get(n, "i32") for n in names}
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in ("X", "stride_xm", "Q", "S", "Z", "AQ", "OUT",
                                                                    "stride_om", "WS", "CNT", "N", "SP")}
    src = ASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in cst.items()}, attrs=attrs)
    comp = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps, num_stages=1))
    return per_weight(comp, 2 * u * tpw * 16 * 128 / 32)  # 2u groups per iteration


def per_weight(comp, weights_per_thread, mmas=None):
    """Registers, loop length, instructions per weight and the top of the mix (kernel_sass.py's
    reading of the outermost loop; mmas: the loop with that many HMMA, e.g. a warp-specialized
    kernel's consumer loop rather than its wait-retry paths)."""
    from kernel_sass import loop_mix

    keep = None if mmas is None else (lambda body: sum("HMMA" in t for t in body) == mmas)
    regs, mix = loop_mix(comp, keep)
    n = sum(mix.values())
    return regs, n, n / weights_per_thread, {k: round(v / weights_per_thread, 3) for k, v in mix.most_common(10)}


def _parse_config(key):
    """'w4:tpw1:sk8:u2:xb0' -> (4, 1, 8, 2, 0)."""
    parts = key.split(":")
    names = ("w", "tpw", "sk", "u", "xb")
    if len(parts) != 5 or any(not p.startswith(n) for p, n in zip(parts, names)):
        raise ValueError(f"launch {key!r} is not w<warps>:tpw<tiles>:sk<split>:u<groups>:xb<0|1>")
    return tuple(int(p[len(n):]) for p, n in zip(parts, names))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--emulate", action="store_true", help="CPU: the packed layout's math against float64")
    ap.add_argument("--check", action="store_true", help="GPU: only the correctness check")
    ap.add_argument("--sass", action="store_true", help="offline sm_90 SASS counts (no GPU)")
    ap.add_argument("--shapes", default="4096x14336,14336x4096,8192x8192,16384x16384,4096x4096")
    ap.add_argument("--bits", default="2,4")
    ap.add_argument("--batches", default="1")
    ap.add_argument("--out", default=None)
    ap.add_argument("--tag", default="h200")
    ap.add_argument("--xm-pairs", default=None, metavar="JSON", help="read a timing file (lop3_layout_h200d.json): "
                    "each launch with masked activation loads (xm1) against the same without (xm0)")
    ap.add_argument("--profile", default=None, help="SHAPE:BITS:WARPS:TPW:SK: launch it a few times (for ncu)")
    ap.add_argument("--diagnose", default=None, help="wK:tpwT:skS:uU:xbX,...: each launch as is and with the "
                    "activation / code streams read from the first group (cache hits; timing only)")
    args = ap.parse_args()
    try:
        diag_cfgs = [_parse_config(c) for c in args.diagnose.split(",")] if args.diagnose else []
        prof = args.profile.split(":") if args.profile else None
        prof = prof and (tuple(int(v) for v in prof[0].split("x")), *(int(v) for v in prof[1:]))
    except ValueError as err:
        raise SystemExit(f"{err}: write --diagnose as w4:tpw1:sk8:u2:xb0[,...] and --profile as "
                         "4096x14336:2:4:1:8 (shape:bits:warps:tiles per warp:split)") from None
    if args.xm_pairs:
        with open(args.xm_pairs) as f:
            rows = json.load(f)["rows"]
        r = sorted(t[k[:-1] + "0"] / t[k] for row in rows for t in [row["tried"]] for k in t
                   if k.endswith("xm1") and k[:-1] + "0" in t)
        if not r:
            raise SystemExit(f"{args.xm_pairs}: no xm0 / xm1 pairs (a file of `--out DIR --tag TAG` runs after commit "
                             "110f935 has them)")
        print(f"masked activation loads: {len(r)} pairs, faster in {sum(x > 1 for x in r)}, speedup median "
              f"{r[len(r) // 2]:.2f}x, range {r[0]:.2f}-{r[-1]:.2f}x")
        return
    if not (args.emulate or args.sass) and not torch.cuda.is_available():
        raise SystemExit("this mode times or checks GPU launches: run it on a CUDA device "
                         "(--emulate and --sass need none)")
    if args.emulate:
        check_emulator()
        return
    if args.sass:
        rows = []
        for bits in (2, 4):
            for tpw, warps in ((1, 1), (2, 1), (1, 4), (2, 4)):
                regs, n, pw, mix = sass_counts(bits, tpw, warps)
                rows.append(dict(bits=bits, tpw=tpw, warps=warps, registers=regs, loop=n, per_weight=round(pw, 3),
                                 mix=mix))
                print(f"{bits}-bit tpw{tpw} w{warps}: {regs} registers, loop {n} instructions, {pw:.2f} per weight  {mix}")
        for key in ("w4:tpw1:sk8:u2:xb0", "w4:tpw1:sk8:u2:xb1", "w4:tpw1:sk8:u4:xb1", "w4:tpw2:sk8:u2:xb1"):
            warps, tpw, _, u, xb = _parse_config(key)  # --diagnose's launches: as is and all cached
            pws = [round(sass_counts(2, tpw, warps, u=u, xb=xb, diag=d)[2], 3) for d in (0, 3)]
            rows.append(dict(bits=2, config=key, per_weight_as_is=pws[0], per_weight_all_cached=pws[1]))
            print(f"2-bit {key}: {pws[0]:.2f} per weight as is, {pws[1]:.2f} with --diagnose's all-cached switch")
        if args.out:
            ver = "".join(triton.__version__.split(".")[:2])
            with open(os.path.join(args.out, f"lop3_sass_triton{ver}.json"), "w") as f:
                json.dump(rows, f, indent=1)
        return
    if args.profile:
        (n, k), bits, warps, tpw, sk = prof
        codes, s, z, x = random_case(n, k, bits, 1, device="cuda", asym=False)
        lw = Lop3Weight(codes, s, z, bits, float(1 << (bits - 1)))
        out = torch.empty(1, n, device="cuda", dtype=torch.float16)
        for _ in range(6):
            run(lw, x, out, warps, tpw, sk)
        torch.cuda.synchronize()
        return
    if args.check:
        check_gpu()
        return
    if args.diagnose:
        import kernel_bench as kb

        res = []
        for shape in args.shapes.split(","):
            n, k = (int(v) for v in shape.split("x"))
            for bits in (int(b) for b in args.bits.split(",")):
                codes, s, z, x = random_case(n, k, bits, 1, device="cuda", asym=False)
                lw0 = Lop3Weight(codes, s, z, bits, float(1 << (bits - 1)))
                lws = [lw0] + [lw0.clone() for _ in range(kb.copies_for(lw0.bytes_read()) - 1)]
                outs = [torch.empty(1, n, device="cuda", dtype=torch.float16) for _ in lws]
                for cfg, (warps, tpw, sk, u, xb) in zip(args.diagnose.split(","), diag_cfgs):
                    ts = {}
                    for name, diag in (("as is", 0), ("x cached", 1), ("codes cached", 2), ("all cached", 3)):
                        ts[name] = round(kb.graph_time([lambda lw=lw, o=o: run(lw, x, o, warps, tpw, sk, u=u, xb=xb,
                                                                               diag=diag) for lw, o in zip(lws, outs)]), 2)
                    res.append(dict(shape=shape, bits=bits, config=cfg, **ts))
                    print(f"{shape} {bits}-bit {cfg:24s} " + "  ".join(f"{a} {b:6.2f}" for a, b in ts.items()), flush=True)
        if args.out:
            with open(os.path.join(args.out, f"lop3_diagnose_{args.tag}.json"), "w") as f:
                json.dump(res, f, indent=1)
        return
    gpu_main(args)


def check_gpu():
    """NaN-poisoned outputs against float64, every launch shape the timing tries."""
    rows, worst = [], 0.0
    for bits in (2, 4):
        for n, k, m, asym in ((256, 1024, 1, True), (512, 2048, 3, False), (4096, 14336, 1, False),
                              (384, 1152, 8, True), (128, 4096, 5, True)):
            codes, s, z, x = random_case(n, k, bits, m, seed=n + k + m + bits, device="cuda", asym=asym)
            ref = reference(codes, s, z, x)
            lw = Lop3Weight(codes, s, z, bits, None if asym else float(1 << (bits - 1)))
            for warps in (1, 2, 4, 8):
                for tpw in (1, 2):
                    if n % (16 * warps * tpw):
                        continue
                    for sk in (1, 3, 8):
                        for u, xb in ((1, 0), (2, 0), (4, 0)):  # the buffered-activation variants: check_small
                            out = torch.full((m, n), float("nan"), device="cuda", dtype=torch.float16)
                            run(lw, x, out, warps, tpw, sk, u=u, xb=xb)
                            err = ((out.double() - ref).abs().max() / ref.abs().max()).item()
                            bad = not err < 4e-3  # NaN fails
                            worst = max(worst, err) if not bad else float("inf")
                            rows.append(dict(bits=bits, n=n, k=k, m=m, asym=asym, warps=warps, tpw=tpw, split_k=sk,
                                             u=u, xb=xb, rel_err=err))
                            if bad:
                                print(f"FAIL {bits}-bit {n}x{k} m{m} asym={asym} w{warps} tpw{tpw} sk{sk} u{u}: {err}")
    print(f"GPU check: {len(rows)} launches, worst rel err {worst:.2e}", flush=True)
    return rows, worst


def check_small():
    """The timed launch shapes on NaN-poisoned outputs against float64 (batch 1 and 3)."""
    rows, worst = [], 0.0
    for bits in (2, 4):
        for n, k, m in ((4096, 14336, 1), (512, 2048, 3)):
            codes, s, z, x = random_case(n, k, bits, m, seed=n + k + m + bits, device="cuda", asym=False)
            ref = reference(codes, s, z, x)
            lw = Lop3Weight(codes, s, z, bits, float(1 << (bits - 1)))
            for warps, tpw, sk, u, xm in ((4, 1, 7, 2, 1), (4, 2, 4, 4, 1), (4, 1, 4, 4, 0), (4, 2, 8, 2, 0)):
                out = torch.full((m, n), float("nan"), device="cuda", dtype=torch.float16)
                run(lw, x, out, warps, tpw, sk, u=u, xb=1, xm=xm)
                err = ((out.double() - ref).abs().max() / ref.abs().max()).item()
                worst = max(worst, err) if err < 4e-3 else float("inf")
                rows.append(dict(bits=bits, n=n, k=k, m=m, warps=warps, tpw=tpw, split_k=sk, u=u, xb=1, xm=xm,
                                 rel_err=err))
    print(f"GPU check: {len(rows)} launches, worst rel err {worst:.2e}", flush=True)
    return rows, worst


def gpu_main(args):
    import kernel_bench as kb  # benchmarks/kernel_bench.py: timing, copies, plain read

    from matgptq.kernels.dispatch import choose_config, run_config

    checks, worst = check_small()
    bw, _ = kb.copy_bandwidth()
    print(f"copy bandwidth {bw / 1e9:.0f} GB/s", flush=True)
    res = []
    hdr = f"{'shape':>11} {'b':>2} {'m':>2} {'library':>18} {'lop3 layout':>18} {'speedup':>8} {'plain read':>11}  config"
    print(hdr, flush=True)
    for shape in args.shapes.split(","):
        n, k = (int(v) for v in shape.split("x"))
        for bits in (int(b) for b in args.bits.split(",")):
            for m in (int(b) for b in args.batches.split(",")):
                pw0, _ = kb.make_packed(n, k, bits, "fixed", "nested", 128, seed=bits)
                lib_bytes = pw0.bytes_read(bits)
                copies = [pw0] + [kb.clone_packed(pw0) for _ in range(kb.copies_for(lib_bytes) - 1)]
                x = torch.randn(m, k, device="cuda", dtype=torch.float16)
                outs = [torch.empty(m, n, device="cuda", dtype=torch.float16) for _ in copies]
                cfg = choose_config(x, pw0, bits)
                lib_us = kb.graph_time([lambda p=p, o=o: run_config(cfg, x, p, bits, o, None)
                                        for p, o in zip(copies, outs)])
                del copies
                codes, s, z, _ = random_case(n, k, bits, 1, seed=bits, device="cuda", asym=False)
                lw0 = Lop3Weight(codes, s, z, bits, float(1 << (bits - 1)))
                nbytes = lw0.bytes_read()
                lws = [lw0] + [lw0.clone() for _ in range(kb.copies_for(nbytes) - 1)]
                best, best_t, tried = None, float("inf"), {}
                for warps, tpw, sk, u, xb, xm in itertools.product((4,), (1, 2), (2, 4, 7, 8, 14, 16), (2, 4), (1,),
                                                                   (0, 1)):
                    ng = k // 128
                    if n % (16 * warps * tpw) or ng % sk or (ng // sk) % (2 * u):  # no idle groups
                        continue
                    ws = torch.empty(sk * m * n, device="cuda", dtype=torch.float32)
                    cnt = torch.zeros(2 * (n // (16 * warps * tpw)), device="cuda", dtype=torch.int32)
                    t = kb.graph_time([lambda lw=lw, o=o: run(lw, x, o, warps, tpw, sk, ws, cnt, u, xb, 0, xm)
                                       for lw, o in zip(lws, outs)])
                    key = f"w{warps}:tpw{tpw}:sk{sk}:u{u}:xb{xb}:xm{xm}"
                    tried[key] = round(t, 2)
                    if t < best_t:
                        best, best_t = key, t
                del lws
                rd = kb.read_time(nbytes)
                row = dict(shape=shape, bits=bits, batch=m, lib_us=round(lib_us, 2), lib_config=cfg.key(),
                           lib_bytes=lib_bytes, bytes=nbytes, us=round(best_t, 2), config=best,
                           pct_copy=round(100 * nbytes / (best_t * 1e-6) / bw, 1),
                           lib_pct_copy=round(100 * lib_bytes / (lib_us * 1e-6) / bw, 1),
                           read_us=round(rd, 2), tried=tried)
                res.append(row)
                print(f"{shape:>11} {bits:>2} {m:>2} {lib_us:8.2f} µs {row['lib_pct_copy']:5.1f}% "
                      f"{best_t:8.2f} µs {row['pct_copy']:5.1f}% {lib_us / best_t:7.2f}x {rd:8.2f} µs  {best}",
                      flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, f"lop3_layout_{args.tag}.json")
        with open(path, "w") as f:
            json.dump(dict(device=torch.cuda.get_device_name(), triton=triton.__version__,
                           copy_bw_GBps=round(bw / 1e9, 1), check_worst_rel_err=worst, checks=checks, rows=res),
                      f, indent=1)
        print("wrote", path)


if __name__ == "__main__":
    main()
