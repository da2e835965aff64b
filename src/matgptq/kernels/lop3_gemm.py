"""Tensor-core matmul on the ``lop3`` layout for the batches its Gluon kernel does not serve
(more than 32 rows, bf16, the interpreter): per 128-column group, the block's words are loaded
once, 16 bytes at a time (:func:`.lop3_dequant.pair_words`), and expanded to a [BN, 128] tile in
word order by the threads that loaded them (:func:`.lop3_dequant.pair_tile`), the
activations loaded in the same column order, one ``tl.dot`` multiplies them, and the scale and
zero are applied to the fp32 result: sum w·x = s · (2^d · (x · v) - (2^d v0 + z_b) · sum x). On
a GPU v = v0 + k comes from one shift and one lop3 per pair of codes (v0 = 1024 in fp16, 128 in
bf16: the mantissa's unit is 1 there); the interpreter converts the codes (v0 = 0). Split-K with
the in-kernel fixup of :func:`.triton_decode.finish_tile`.
"""

from __future__ import annotations

from .triton_decode import triton

if triton is not None:
    import triton.language as tl

    from .lop3_dequant import pair_codes, pair_tile, pair_words, word_order_pairs, word_values
    from .triton_decode import finish_tile

    @triton.jit(do_not_specialize=["M", "NG", "GPS", "SPLIT_K"])
    def lop3_gemm_kernel(X, stride_xm, Q, S, OUT, stride_om, BIAS, WS, CNT, M, N, SP, NG, GPS, SPLIT_K, two_d, zv,
                         BM: tl.constexpr, BN: tl.constexpr, BITS: tl.constexpr, HAS_BIAS: tl.constexpr,
                         F32DOT: tl.constexpr, ASM: tl.constexpr, MAGIC: tl.constexpr, NS: tl.constexpr):
        """Output tile [BM batch rows, BN weight rows], groups GPS · pid_k .. of the K axis."""
        pid_n = tl.program_id(0)
        pid_m = tl.program_id(1)
        pid_k = tl.program_id(2)
        rows = pid_n * BN + tl.arange(0, BN)
        prs = pid_n * (BN // 2) + tl.arange(0, BN // 2)  # row pairs: rows 2 pr, 2 pr + 1
        offs_m = pid_m * BM + tl.arange(0, BM)
        xrow = X + offs_m[:, None, None].to(tl.int64) * stride_xm + word_order_pairs(BITS)[None, :, :]
        mrow = offs_m[:, None, None] < M
        acc = tl.zeros([BM, BN], dtype=tl.float32)
        g0 = pid_k * GPS
        g1 = tl.minimum(g0 + GPS, NG)
        for G in tl.range(g0, g1, num_stages=NS):
            xv = tl.reshape(tl.load(xrow + G * 128, mask=mrow, other=0.0), (BM, 128))  # in word order
            if F32DOT:  # the interpreter's bf16 dot is wrong; codes and bf16 values are exact in fp32
                wt = pair_tile(pair_codes(Q, prs, N, G, NG, BITS), BITS, BN).to(tl.float32)
                d = tl.dot(xv.to(tl.float32), tl.trans(wt), input_precision="ieee")
            elif ASM and BITS != 3:  # v0 + k from one shift and one lop3 per pair
                v = word_values(pair_words(Q, prs, N, G, NG, BITS), BITS, MAGIC, X.dtype.element_ty == tl.bfloat16)
                d = tl.dot(xv, tl.trans(pair_tile(v, BITS, BN)))
            else:  # (3 bits: the codes, v0 = 0)
                d = tl.dot(xv, tl.trans(pair_tile(pair_codes(Q, prs, N, G, NG, BITS), BITS, BN).to(xv.dtype)))
            xs = tl.sum(xv.to(tl.float32), axis=1)
            s = tl.load(S + G * SP + rows, mask=rows < N, other=0.0).to(tl.float32)
            acc += s[None, :] * (d * two_d - zv * xs[:, None])  # zv = 2^d v0 + z_b
        tile_id = pid_n * tl.num_programs(1) + pid_m
        finish_tile(acc, offs_m[:, None], rows[None, :], M, N, OUT, stride_om, BIAS, WS, CNT, tile_id, pid_k, SPLIT_K,
                    HAS_BIAS)
