"""Tensor-core matmul for every batch the CUDA-core kernel does not serve better: per scale group,
the codes become values exact in the activation dtype (v = MU + k/LAM, or k itself), one
``tl.dot`` multiplies them with the activations, and the scale and zero are applied to the fp32
result: sum w*x = s*(C1 * (x . v) - (C0 + z_b) * sum x). Split-K with an in-kernel fixup.
Also the plain dequantization kernel used before cuBLAS for very large batches.
"""

from __future__ import annotations

from .triton_decode import triton

if triton is not None:
    import triton.language as tl

    from .triton_decode import finish_tile, half2_pair, lane_value, load_chunks, unit_word

    @triton.jit
    def _lane_values(word, u: tl.constexpr, i: tl.constexpr, LAM, LMU, PW: tl.constexpr, B: tl.constexpr,
                     PRMT: tl.constexpr, RAW: tl.constexpr, CODES: tl.constexpr, xdt: tl.constexpr):
        v = lane_value(word, i, u, RAW, PW & 15, B, PRMT)
        if CODES:
            v = v * LAM - LMU
        return v.to(xdt)

    @triton.jit
    def _unit_pair(u: tl.constexpr, p: tl.constexpr, c0, c1, c2, c3, c4, c5, c6, c7, LAM, LMU,
                   PW: tl.constexpr, PO: tl.constexpr, NP: tl.constexpr, RND: tl.constexpr, B: tl.constexpr,
                   PRMT: tl.constexpr, RAW: tl.constexpr, CODES: tl.constexpr, HALF2: tl.constexpr,
                   ROTM: tl.constexpr, xdt: tl.constexpr):
        """Unit u of lanes 2p and 2p+1 as two [BN, V] tiles of values in the activation dtype: v (an
        affine image of the code, exact in xdt) or, with CODES, the code k itself. HALF2 (fp16 on
        a GPU): one byte permute makes both lanes' 1024 + k at once."""
        if HALF2:
            word = unit_word(u, c0, c1, c2, c3, c4, c5, c6, c7, PW, PO, NP, RND, B, True, ROTM, True)  # HALF2: a GPU
            lo, hi = tl.split(half2_pair(word, p))
        else:
            word = unit_word(u, c0, c1, c2, c3, c4, c5, c6, c7, PW, PO, NP, RND, B, PRMT, ROTM, PRMT)  # HW: PRMT means a GPU
            lo = _lane_values(word, u, 2 * p, LAM, LMU, PW, B, PRMT, RAW, CODES, xdt)
            hi = _lane_values(word, u, 2 * p + 1, LAM, LMU, PW, B, PRMT, RAW, CODES, xdt)
        return lo, hi

    @triton.jit
    def _in_k_order(a, BN: tl.constexpr, V: tl.constexpr, UG: tl.constexpr):
        """[BN, V, 2, ...] joined units -> [BN, UG*V] with column 16*(unit) + t."""
        if UG == 2:
            a = tl.permute(a, (0, 2, 1))
        elif UG == 4:
            a = tl.permute(a, (0, 3, 2, 1))
        elif UG == 8:
            a = tl.permute(a, (0, 4, 3, 2, 1))
        return tl.reshape(a, [BN, UG * V])

    @triton.jit
    def _group_tiles(p: tl.constexpr, u0: tl.constexpr, UG: tl.constexpr, BN: tl.constexpr, V: tl.constexpr,
                     c0, c1, c2, c3, c4, c5, c6, c7, LAM, LMU,
                     PW: tl.constexpr, PO: tl.constexpr, NP: tl.constexpr, RND: tl.constexpr, B: tl.constexpr,
                     PRMT: tl.constexpr, RAW: tl.constexpr, CODES: tl.constexpr, HALF2: tl.constexpr,
                     ROTM: tl.constexpr, xdt: tl.constexpr):
        """Units u0..u0+UG-1 of lanes 2p and 2p+1 as two [BN, UG*V] tiles in k order (column
        16*(u - u0) + t): tl.join stacks the units on new minor axes, a permute puts them before t."""
        a, A = _unit_pair(u0, p, c0, c1, c2, c3, c4, c5, c6, c7, LAM, LMU, PW, PO, NP, RND, B, PRMT, RAW, CODES, HALF2, ROTM, xdt)
        if UG >= 2:
            b, Bb = _unit_pair(u0 + 1, p, c0, c1, c2, c3, c4, c5, c6, c7, LAM, LMU, PW, PO, NP, RND, B, PRMT, RAW, CODES, HALF2, ROTM, xdt)
            a = tl.join(a, b)  # [BN, V, bit0]
            A = tl.join(A, Bb)
        if UG >= 4:
            c, C = _unit_pair(u0 + 2, p, c0, c1, c2, c3, c4, c5, c6, c7, LAM, LMU, PW, PO, NP, RND, B, PRMT, RAW, CODES, HALF2, ROTM, xdt)
            d, D = _unit_pair(u0 + 3, p, c0, c1, c2, c3, c4, c5, c6, c7, LAM, LMU, PW, PO, NP, RND, B, PRMT, RAW, CODES, HALF2, ROTM, xdt)
            a = tl.join(a, tl.join(c, d))  # [BN, V, bit0, bit1]
            A = tl.join(A, tl.join(C, D))
        if UG >= 8:
            e, E = _unit_pair(u0 + 4, p, c0, c1, c2, c3, c4, c5, c6, c7, LAM, LMU, PW, PO, NP, RND, B, PRMT, RAW, CODES, HALF2, ROTM, xdt)
            f, F = _unit_pair(u0 + 5, p, c0, c1, c2, c3, c4, c5, c6, c7, LAM, LMU, PW, PO, NP, RND, B, PRMT, RAW, CODES, HALF2, ROTM, xdt)
            g, H = _unit_pair(u0 + 6, p, c0, c1, c2, c3, c4, c5, c6, c7, LAM, LMU, PW, PO, NP, RND, B, PRMT, RAW, CODES, HALF2, ROTM, xdt)
            h, I = _unit_pair(u0 + 7, p, c0, c1, c2, c3, c4, c5, c6, c7, LAM, LMU, PW, PO, NP, RND, B, PRMT, RAW, CODES, HALF2, ROTM, xdt)  # noqa: E741
            a = tl.join(a, tl.join(tl.join(e, f), tl.join(g, h)))  # [BN, V, bit0, bit1, bit2]
            A = tl.join(A, tl.join(tl.join(E, F), tl.join(H, I)))
        return _in_k_order(a, BN, V, UG), _in_k_order(A, BN, V, UG)

    @triton.jit
    def _group_dot(acc, w, kt, i: tl.constexpr, u0: tl.constexpr, xrow, mrow, kcol, rows, nmask, S, Z, N, K, NG,
                   C1, C0, ZOFF, ZCONST, KT: tl.constexpr, V: tl.constexpr, G: tl.constexpr, SYM: tl.constexpr,
                   EVEN: tl.constexpr, F32DOT: tl.constexpr):
        """acc += s * (C1 * (x . w) - (C0 + z_b) * sum x) over one scale group."""
        kk = kt * KT + (8 * i + u0) * V + kcol
        if EVEN:
            xv = tl.load(xrow + kk[None, :], mask=mrow, other=0.0)
        else:
            xv = tl.load(xrow + kk[None, :], mask=mrow & (kk[None, :] < K), other=0.0)
        if F32DOT:  # the interpreter's bf16 dot is wrong; bf16 values are exact in fp32
            d = tl.dot(xv.to(tl.float32), tl.trans(w.to(tl.float32)), input_precision="ieee")
        else:
            d = tl.dot(xv, tl.trans(w))
        xs = tl.sum(xv.to(tl.float32), axis=1)
        if G == 0:
            g = 0
        else:
            g = tl.minimum((kt * KT + (8 * i + u0) * V) // G, NG - 1)
        s = tl.load(S + g * N + rows, mask=nmask, other=0.0).to(tl.float32)
        if SYM:
            acc += s[None, :] * (d * C1 - (C0 + ZCONST - ZOFF) * xs[:, None])
        else:
            zb = tl.load(Z + g * N + rows, mask=nmask, other=0).to(tl.float32) - ZOFF
            acc += s[None, :] * (d * C1 - (C0 + zb[None, :]) * xs[:, None])
        return acc

    @triton.jit(do_not_specialize=["M", "KTN", "NG", "TILES_PER_SPLIT", "SPLIT_K"])
    def gemm_kernel(
        X, stride_xm, Q, S, Z, OUT, stride_om, BIAS, WS, CNT,
        M, N, K, KTN, NG, TILES_PER_SPLIT, SPLIT_K,
        LAM, LMU, C1, C0, ZOFF, ZCONST,
        BM: tl.constexpr, BN: tl.constexpr, V: tl.constexpr, G: tl.constexpr, UG: tl.constexpr,
        B: tl.constexpr, NP: tl.constexpr, PW: tl.constexpr, PO: tl.constexpr, RND: tl.constexpr,
        NCH: tl.constexpr, CH: tl.constexpr, SYM: tl.constexpr,
        EVEN: tl.constexpr, HAS_BIAS: tl.constexpr, PRMT: tl.constexpr, RAW: tl.constexpr,
        CODES: tl.constexpr, HALF2: tl.constexpr, F32DOT: tl.constexpr, ROTM: tl.constexpr, NS: tl.constexpr,
    ):
        """One tensor-core dot per scale group: the group's UG units are decoded to values exact in
        the activation dtype, joined into a [BN, UG*16] tile in k order and multiplied with the
        group's contiguous activations; the scale and zero are applied to the fp32 result."""
        pid_n = tl.program_id(0)
        pid_m = tl.program_id(1)
        pid_k = tl.program_id(2)
        KT: tl.constexpr = 32 * V
        GK: tl.constexpr = UG * V
        rows = pid_n * BN + tl.arange(0, BN)
        offs_m = pid_m * BM + tl.arange(0, BM)
        t = tl.arange(0, V)
        nmask = rows < N
        qoffs = rows[:, None] * V + t[None, :]
        qmask = rows[:, None] < N
        chunk_stride = N * V
        xdt = X.dtype.element_ty
        kcol = tl.arange(0, GK)
        xrow = X + offs_m[:, None] * stride_xm
        mrow = offs_m[:, None] < M
        acc = tl.zeros([BM, BN], dtype=tl.float32)
        kt0 = pid_k * TILES_PER_SPLIT
        kt1 = tl.minimum(kt0 + TILES_PER_SPLIT, KTN)
        for kt in tl.range(kt0, kt1, num_stages=NS):  # NS > 1: codes copied ahead asynchronously
            base = Q + tl.cast(kt, tl.int64) * (CH * chunk_stride)
            c0, c1, c2, c3, c4, c5, c6, c7 = load_chunks(base + qoffs, chunk_stride, qmask, NCH)
            for p in tl.static_range(2):
                for u0 in tl.static_range(0, 8, UG):
                    wl, wh = _group_tiles(p, u0, UG, BN, V, c0, c1, c2, c3, c4, c5, c6, c7, LAM, LMU,
                                          PW, PO, NP, RND, B, PRMT, RAW, CODES, HALF2, ROTM, xdt)
                    acc = _group_dot(acc, wl, kt, 2 * p, u0, xrow, mrow, kcol, rows, nmask, S, Z, N, K, NG,
                                     C1, C0, ZOFF, ZCONST, KT, V, G, SYM, EVEN, F32DOT)
                    acc = _group_dot(acc, wh, kt, 2 * p + 1, u0, xrow, mrow, kcol, rows, nmask, S, Z, N, K, NG,
                                     C1, C0, ZOFF, ZCONST, KT, V, G, SYM, EVEN, F32DOT)
        tile_id = pid_n * tl.num_programs(1) + pid_m
        finish_tile(acc, offs_m[:, None], rows[None, :], M, N, OUT, stride_om, BIAS, WS, CNT, tile_id, pid_k, SPLIT_K, HAS_BIAS)

    @triton.jit(do_not_specialize=["NG"])
    def dequant_kernel(
        Q, S, Z, W, N, K, NG,
        LAM, LMU, TWO_D, ZOFF, ZCONST,
        BN: tl.constexpr, V: tl.constexpr, G: tl.constexpr, UG: tl.constexpr,
        B: tl.constexpr, NP: tl.constexpr, PW: tl.constexpr, PO: tl.constexpr, RND: tl.constexpr,
        NCH: tl.constexpr, CH: tl.constexpr, SYM: tl.constexpr, PRMT: tl.constexpr, RAW: tl.constexpr,
        ROTM: tl.constexpr,
    ):
        """W[n, k] = s*(k*2^d - z_b) in storage column order, one k-tile per program."""
        pid_n = tl.program_id(0)
        kt = tl.program_id(1)
        KT: tl.constexpr = 32 * V
        rows = pid_n * BN + tl.arange(0, BN)
        t = tl.arange(0, V)
        qmask = rows[:, None] < N
        chunk_stride = N * V
        base = Q + tl.cast(kt, tl.int64) * (CH * chunk_stride)
        c0, c1, c2, c3, c4, c5, c6, c7 = load_chunks(base + rows[:, None] * V + t[None, :], chunk_stride, qmask, NCH)
        for i in tl.static_range(4):
            for u in tl.static_range(8):
                word = unit_word(u, c0, c1, c2, c3, c4, c5, c6, c7, PW, PO, NP, RND, B, PRMT, ROTM, PRMT)
                kf = lane_value(word, i, u, RAW, PW & 15, B, PRMT) * LAM - LMU
                kk = kt * KT + (8 * i + u) * V + t
                if G == 0:
                    g = 0
                else:
                    g = tl.minimum((kt * KT + (8 * i + u) * V) // G, NG - 1)
                s = tl.load(S + g * N + rows, mask=rows < N, other=0.0).to(tl.float32)
                if SYM:
                    zb = ZCONST - ZOFF
                    w = s[:, None] * (kf * TWO_D - zb)
                else:
                    zb = tl.load(Z + g * N + rows, mask=rows < N, other=0).to(tl.float32) - ZOFF
                    w = s[:, None] * (kf * TWO_D - zb[:, None])
                tl.store(W + rows[:, None].to(tl.int64) * K + kk[None, :], w.to(W.dtype.element_ty),
                         mask=qmask & (kk[None, :] < K))
