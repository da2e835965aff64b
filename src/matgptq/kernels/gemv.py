"""Fused dequantize-and-multiply for small batches (decode): CUDA cores, fp32 accumulation.

Each program owns BN output rows and a range of k-tiles (split-K); every thread keeps a
[BM, rows, 4 words] slice of the [BM, BN, V] accumulator, decodes each weight once and
multiplies it into all BM activation rows. Scales and zeros are applied once per group and row
(see :mod:`.triton_decode`). With ``num_stages`` > 1 Triton's pipeliner copies the next k-tiles'
codes into shared memory asynchronously while the current one is decoded (on the GPU).
"""

from __future__ import annotations

from .triton_decode import triton

if triton is not None:
    import triton.language as tl

    from .triton_decode import finish_tile, half2_pair, lane_value, load_chunks, unit_word

    @triton.jit(do_not_specialize=["M", "KTN", "NG", "TILES_PER_SPLIT", "SPLIT_K"])
    def gemv_kernel(
        X, stride_xm, Q, S, Z, OUT, stride_om, BIAS, WS, CNT,
        M, N, K, KTN, NG, TILES_PER_SPLIT, SPLIT_K,
        C1, C0, ZOFF, ZCONST,
        BM: tl.constexpr, BN: tl.constexpr, V: tl.constexpr, G: tl.constexpr, UG: tl.constexpr,
        B: tl.constexpr, NP: tl.constexpr, PW: tl.constexpr, PO: tl.constexpr, RND: tl.constexpr,
        NCH: tl.constexpr, CH: tl.constexpr, SYM: tl.constexpr,
        EVEN: tl.constexpr, HAS_BIAS: tl.constexpr, PRMT: tl.constexpr, RAW: tl.constexpr, ROTM: tl.constexpr,
        HALF2: tl.constexpr, NS: tl.constexpr,
    ):
        pid_n = tl.program_id(0)
        pid_k = tl.program_id(1)
        KT: tl.constexpr = 32 * V
        rows = pid_n * BN + tl.arange(0, BN)
        rows3 = rows[None, :, None]
        t3 = tl.arange(0, V)[None, None, :]
        m3 = tl.arange(0, BM)[:, None, None]
        qmask = rows3 < N
        qoffs = rows3 * V + t3
        chunk_stride = N * V
        acc = tl.zeros([BM, BN, V], dtype=tl.float32)
        kt0 = pid_k * TILES_PER_SPLIT
        kt1 = tl.minimum(kt0 + TILES_PER_SPLIT, KTN)
        for kt in tl.range(kt0, kt1, num_stages=NS):  # NS > 1: codes copied ahead asynchronously
            base = Q + tl.cast(kt, tl.int64) * (CH * chunk_stride)
            c0, c1, c2, c3, c4, c5, c6, c7 = load_chunks(base + qoffs, chunk_stride, qmask, NCH)
            for i in tl.static_range(4):
                for u in tl.static_range(8):
                    if HALF2:  # 8-bit codes: one byte permute gives fp16 1024 + k of two lanes
                        word = unit_word(u, c0, c1, c2, c3, c4, c5, c6, c7, PW, PO, NP, RND, B, True, ROTM, True)  # HALF2: a GPU
                        lo, hi = tl.split(half2_pair(word, i // 2))
                        if i % 2 == 0:
                            v = lo.to(tl.float32)
                        else:
                            v = hi.to(tl.float32)
                    else:
                        word = unit_word(u, c0, c1, c2, c3, c4, c5, c6, c7, PW, PO, NP, RND, B, PRMT, ROTM, PRMT)  # HW: PRMT means a GPU
                        v = lane_value(word, i, u, RAW, PW & 15, B, PRMT)
                    kk = kt * KT + (8 * i + u) * V + t3
                    if EVEN:
                        xv = tl.load(X + m3 * stride_xm + kk).to(tl.float32)
                    else:
                        xv = tl.load(X + m3 * stride_xm + kk, mask=(m3 < M) & (kk < K), other=0.0).to(tl.float32)
                    if u % UG == 0:
                        a = v * xv
                        xs = xv
                    else:
                        a += v * xv
                        xs += xv
                    if (u + 1) % UG == 0:
                        if G == 0:
                            g = 0
                        else:
                            g = tl.minimum((kt * KT + (8 * i + u + 1 - UG) * V) // G, NG - 1)
                        s = tl.load(S + g * N + rows, mask=rows < N, other=0.0).to(tl.float32)[None, :, None]
                        if SYM:  # C1 is a power of two: (C0 + z_b) / C1 is exact enough and C1 waits to the end
                            acc += s * (a - ((C0 + ZCONST - ZOFF) / C1) * xs)
                        else:
                            zb = tl.load(Z + g * N + rows, mask=rows < N, other=0).to(tl.float32) - ZOFF
                            acc += s * (a - ((C0 + zb) / C1)[None, :, None] * xs)
        out = tl.sum(acc, axis=2) * C1
        offs_m = tl.arange(0, BM)
        finish_tile(out, offs_m[:, None], rows[None, :], M, N, OUT, stride_om, BIAS, WS, CNT, pid_n, pid_k, SPLIT_K, HAS_BIAS)
