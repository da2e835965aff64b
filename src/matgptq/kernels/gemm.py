"""Dequantize into tensor-core tiles for larger batches: codes k (exact in fp16/bf16) are fed to
``tl.dot`` unit by unit and the scale and zero are applied once per group:
sum w*x = s*(2^d * (x . k) - z_b * sum x), fp32 accumulation, split-K with an in-kernel fixup.
Also the plain dequantization kernel used before cuBLAS for very large batches.
"""

from __future__ import annotations

from .triton_decode import triton

if triton is not None:
    import triton.language as tl

    from .triton_decode import finish_tile, lane_value, load_chunks, unit_word

    @triton.jit(do_not_specialize=["M", "KTN", "NG", "TILES_PER_SPLIT", "SPLIT_K"])
    def gemm_kernel(
        X, stride_xm, Q, S, Z, OUT, stride_om, BIAS, WS, CNT,
        M, N, K, KTN, NG, TILES_PER_SPLIT, SPLIT_K,
        LAM, LMU, TWO_D, ZOFF, ZCONST,
        BM: tl.constexpr, BN: tl.constexpr, V: tl.constexpr, G: tl.constexpr, UG: tl.constexpr,
        B: tl.constexpr, NP: tl.constexpr, PW: tl.constexpr, PO: tl.constexpr, RND: tl.constexpr,
        NCH: tl.constexpr, CH: tl.constexpr, SYM: tl.constexpr,
        EVEN: tl.constexpr, HAS_BIAS: tl.constexpr, PRMT: tl.constexpr, RAW: tl.constexpr,
        F32DOT: tl.constexpr,
    ):
        pid_n = tl.program_id(0)
        pid_m = tl.program_id(1)
        pid_k = tl.program_id(2)
        KT: tl.constexpr = 32 * V
        rows = pid_n * BN + tl.arange(0, BN)
        offs_m = pid_m * BM + tl.arange(0, BM)
        t = tl.arange(0, V)
        nmask = rows < N
        qoffs = rows[:, None] * V + t[None, :]
        qmask = rows[:, None] < N
        chunk_stride = N * V
        xdt = X.dtype.element_ty
        acc = tl.zeros([BM, BN], dtype=tl.float32)
        kt0 = pid_k * TILES_PER_SPLIT
        kt1 = tl.minimum(kt0 + TILES_PER_SPLIT, KTN)
        for kt in range(kt0, kt1):
            base = Q + tl.cast(kt, tl.int64) * (CH * chunk_stride)
            c0, c1, c2, c3, c4, c5, c6, c7 = load_chunks(base + qoffs, chunk_stride, qmask, NCH)
            for i in tl.static_range(4):
                ag = tl.zeros([BM, BN], dtype=tl.float32)
                xs = tl.zeros([BM], dtype=tl.float32)
                for u in tl.static_range(8):
                    word = unit_word(u, c0, c1, c2, c3, c4, c5, c6, c7, PW, PO, NP, RND, B, PRMT)
                    kf = lane_value(word, i, u, RAW, PW & 15, B, PRMT) * LAM - LMU  # exact code k
                    kk = kt * KT + (8 * i + u) * V + t
                    if EVEN:
                        xv = tl.load(X + offs_m[:, None] * stride_xm + kk[None, :], mask=offs_m[:, None] < M, other=0.0)
                    else:
                        xv = tl.load(X + offs_m[:, None] * stride_xm + kk[None, :],
                                     mask=(offs_m[:, None] < M) & (kk[None, :] < K), other=0.0)
                    if F32DOT:  # the interpreter's bf16 dot is wrong; bf16 values are exact in fp32
                        ag = tl.dot(xv.to(tl.float32), tl.trans(kf), ag, input_precision="ieee")
                    else:
                        ag = tl.dot(xv, tl.trans(kf.to(xdt)), ag)
                    xs += tl.sum(xv.to(tl.float32), axis=1)
                    if (u + 1) % UG == 0:
                        if G == 0:
                            g = 0
                        else:
                            g = tl.minimum((kt * KT + (8 * i + u + 1 - UG) * V) // G, NG - 1)
                        s = tl.load(S + g * N + rows, mask=nmask, other=0.0).to(tl.float32)
                        if SYM:
                            acc += s[None, :] * (ag * TWO_D - (ZCONST - ZOFF) * xs[:, None])
                        else:
                            zb = tl.load(Z + g * N + rows, mask=nmask, other=0).to(tl.float32) - ZOFF
                            acc += s[None, :] * (ag * TWO_D - zb[None, :] * xs[:, None])
                        ag = tl.zeros([BM, BN], dtype=tl.float32)
                        xs = tl.zeros([BM], dtype=tl.float32)
        tile_id = pid_n * tl.num_programs(1) + pid_m
        finish_tile(acc, offs_m, rows, M, N, OUT, stride_om, BIAS, WS, CNT, tile_id, pid_k, SPLIT_K, HAS_BIAS)

    @triton.jit(do_not_specialize=["NG"])
    def dequant_kernel(
        Q, S, Z, W, N, K, NG,
        LAM, LMU, TWO_D, ZOFF, ZCONST,
        BN: tl.constexpr, V: tl.constexpr, G: tl.constexpr, UG: tl.constexpr,
        B: tl.constexpr, NP: tl.constexpr, PW: tl.constexpr, PO: tl.constexpr, RND: tl.constexpr,
        NCH: tl.constexpr, CH: tl.constexpr, SYM: tl.constexpr, PRMT: tl.constexpr, RAW: tl.constexpr,
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
                word = unit_word(u, c0, c1, c2, c3, c4, c5, c6, c7, PW, PO, NP, RND, B, PRMT)
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
