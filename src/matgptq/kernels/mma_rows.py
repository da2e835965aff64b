"""The warp-level mma kernel of :mod:`.mma` with its loops swapped, for decode batches of 1 to 8
rows: a program owns one k-tile and a run of row tiles. It loads the k-tile's activations once
(the B fragments of all 32 of its m16n8k16 steps, 64 registers per lane) and their group sums
(the A = 1 mma, once), then walks its row tiles, so the loop body reads nothing but codes and
scales: no activation loads and no A = 1 mma per row tile.

Every k-tile's program writes its rows' partial sums to the split-K workspace and the last of
them per row tile adds them up in a fixed order (:func:`.triton_decode.finish_tile`): one launch,
deterministic. The fragment layout, decode and PTX are those of :mod:`.mma`, whose docstring
explains them.
"""

from __future__ import annotations

from .triton_decode import triton

if triton is not None:
    import triton.language as tl

    from .mma import codes2, ones2, ones_ref, own_rows, step_ref
    from .triton_decode import finish_tile, issue_here, load_chunks, unit_word

    @triton.jit(do_not_specialize=["M", "KTN", "NG", "TILES_PER_PROG", "NT"])
    def mma_rows_kernel(
        X, stride_xm, Q, S, Z, OUT, stride_om, BIAS, WS, CNT,
        M, N, K, KTN, NG, TILES_PER_PROG, NT,
        C1, C0, ZOFF, ZCONST,
        RT: tl.constexpr, V: tl.constexpr, G: tl.constexpr, UG: tl.constexpr,
        B: tl.constexpr, NP: tl.constexpr, PW: tl.constexpr, PO: tl.constexpr, RND: tl.constexpr,
        NCH: tl.constexpr, CH: tl.constexpr, SYM: tl.constexpr,
        EVEN: tl.constexpr, HAS_BIAS: tl.constexpr, PRMT: tl.constexpr, RAW: tl.constexpr, ROTM: tl.constexpr,
        ASM: tl.constexpr, NS: tl.constexpr,
    ):
        """Program (p, kt): k-tile kt, tiles p*TILES_PER_PROG .. of RT row tiles (16 rows each,
        RT / num_warps per warp); batch rows 0..M-1 (M <= 8) are the mma's eight columns."""
        pid_n = tl.program_id(0)
        kt = tl.program_id(1)
        KT: tl.constexpr = 32 * V
        T = tl.arange(0, RT)[:, None]
        E = tl.arange(0, 128)[None, :]
        Gl = E // 16
        C = (E // 4) % 4
        J = E % 4
        zero = tl.zeros([RT, 128], dtype=tl.float32)
        # the k-tile's activations: batch row g (row M - 1 past the batch), columns 4c + j of
        # every unit; the same for every row tile, in the operand layout of each
        xk = X + (tl.minimum(Gl, M - 1) * stride_xm + 4 * C + J + T * 0) + kt * KT
        xs = ()
        sums = ()  # per scale group of the k-tile: sum x (times zs when the zero point is constant)
        d1 = zero
        for i in tl.static_range(4):
            for u in tl.static_range(0, 8, 2):
                ku0 = (8 * i + u) * V
                if EVEN:
                    xa = tl.load(xk + ku0)
                    xb = tl.load(xk + (ku0 + 16))
                else:
                    kx = kt * KT + ku0 + E % 16 + T * 0
                    xa = tl.load(xk + ku0, mask=kx < K, other=0.0)
                    xb = tl.load(xk + (ku0 + 16), mask=kx + 16 < K, other=0.0)
                xs = xs + (xa, xb)
                if ASM:
                    d1 = ones2(xa, xb, d1, u % UG == 0)
                else:
                    if u % UG == 0:
                        d1 = zero
                    d1 += ones_ref(xa, RT) + ones_ref(xb, RT)
                if (u + 2) % UG == 0:
                    if SYM:
                        sums = sums + (d1 * ((C0 + ZCONST - ZOFF) / C1),)
                    else:
                        sums = sums + (d1,)
        chunk_stride = N * V
        qk = Q + tl.cast(kt, tl.int64) * (CH * chunk_stride)
        TILE: tl.constexpr = 16 * RT
        # lane 4g + c: rows r0 and r0 + 2 of its row tile (see :mod:`.mma`), relative to the tile
        r0 = 16 * T + 4 * (Gl // 2) + Gl % 2
        offs0 = r0 * V + 4 * C + J
        sofs = 16 * T + 4 * (Gl // 2) + J
        spar = (tl.arange(0, 32) // 4 % 2)[None, :, None] == 1
        orow0 = 16 * T + 4 * (Gl // 2) + Gl % 2 + 2 * (J // 2)
        ocol = tl.broadcast_to(2 * C + J % 2, [RT, 128])
        t0 = pid_n * TILES_PER_PROG
        t1 = tl.minimum(t0 + TILES_PER_PROG, NT)
        if NS == 2:  # the first tile's codes, before the loop
            n0 = t0 * TILE
            p0, p1, p2, p3, p4, p5, p6, p7 = load_chunks(qk + n0 * V + offs0, chunk_stride, n0 + r0 < N, NCH)
            q0, q1, q2, q3, q4, q5, q6, q7 = load_chunks(qk + n0 * V + offs0 + 2 * V, chunk_stride, n0 + r0 + 2 < N, NCH)
        for t in range(t0, t1):
            n0 = t * TILE
            if NS == 2:  # registers double-buffered: the next tile's loads are issued first
                a0, a1, a2, a3, a4, a5, a6, a7 = p0, p1, p2, p3, p4, p5, p6, p7
                b0, b1, b2, b3, b4, b5, b6, b7 = q0, q1, q2, q3, q4, q5, q6, q7
                nn = n0 + TILE
                nend = tl.minimum(N, t1 * TILE)  # no tile past the program's last
                p0, p1, p2, p3, p4, p5, p6, p7 = load_chunks(qk + nn * V + offs0, chunk_stride, nn + r0 < nend, NCH)
                q0, q1, q2, q3, q4, q5, q6, q7 = load_chunks(qk + nn * V + offs0 + 2 * V, chunk_stride,
                                                             nn + r0 + 2 < nend, NCH)
                if ASM:
                    t = issue_here(t)
            else:
                a0, a1, a2, a3, a4, a5, a6, a7 = load_chunks(qk + n0 * V + offs0, chunk_stride, n0 + r0 < N, NCH)
                b0, b1, b2, b3, b4, b5, b6, b7 = load_chunks(qk + n0 * V + offs0 + 2 * V, chunk_stride,
                                                             n0 + r0 + 2 < N, NCH)
            acc = zero
            d = zero
            smask = n0 + sofs < N
            for i in tl.static_range(4):
                for u in tl.static_range(0, 8, 2):
                    wa0 = unit_word(u, a0, a1, a2, a3, a4, a5, a6, a7, PW, PO, NP, RND, B, True, ROTM)
                    wa1 = unit_word(u, b0, b1, b2, b3, b4, b5, b6, b7, PW, PO, NP, RND, B, True, ROTM)
                    wb0 = unit_word(u + 1, a0, a1, a2, a3, a4, a5, a6, a7, PW, PO, NP, RND, B, True, ROTM)
                    wb1 = unit_word(u + 1, b0, b1, b2, b3, b4, b5, b6, b7, PW, PO, NP, RND, B, True, ROTM)
                    xa = xs[2 * (4 * i + u // 2)]
                    xb = xs[2 * (4 * i + u // 2) + 1]
                    if ASM:
                        d = codes2(wa0, wa1, wb0, wb1, xa, xb, d, i, B == 8, u % UG == 0)
                    else:
                        if u % UG == 0:
                            d = zero
                        d += step_ref(wa0, wa1, xa, i, RT) + step_ref(wb0, wb1, xb, i, RT)
                    if (u + 2) % UG == 0:
                        if G == 0:
                            g = 0
                        else:
                            g = tl.minimum((kt * KT + (8 * i + u + 2 - UG) * V) // G, NG - 1)
                        s = own_rows(tl.load(S + g * N + n0 + sofs, mask=smask, other=0.0), spar, RT).to(tl.float32)
                        if SYM:
                            acc += s * (d - sums[(8 * i + u) // UG])
                        else:
                            zb = own_rows(tl.load(Z + g * N + n0 + sofs, mask=smask, other=0), spar, RT).to(tl.float32)
                            acc += s * (d - ((C0 + zb - ZOFF) / C1) * sums[(8 * i + u) // UG])
            finish_tile(acc * C1, ocol, n0 + orow0, M, N, OUT, stride_om, BIAS, WS, CNT, t, kt, KTN, HAS_BIAS)
