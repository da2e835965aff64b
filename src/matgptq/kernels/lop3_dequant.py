"""The ``lop3`` layout read by plain Triton: a block's words as a tile (:func:`block_words`), their
codes (:func:`word_codes`) or fp16 / bf16 values (:func:`word_values`) in word order, and Ŵ [N, K]
from them in one launch (the large-batch path's dequantize before cuBLAS; also the
interpreter's). :mod:`.lop3_gemm` multiplies the same tiles with ``tl.dot``.

A row's 8·nu words of group G are loaded once each, as a [rows, 8·nu] tile in the order
q = (c·nu + u)·2 + r1 (lop3_pack's names), and every word is expanded into its 2·nf fields by
the thread that loaded it (position e = 2f + h: field f of half h, bit 16h + b·f, so that
positions 2i and 2i + 1 are adjacent columns): the [rows, 128] codes come out in *word order*,
position p = 2·nf·q + e holding column :func:`word_order_cols` [p]. A dot does not care about
the order of k (the gemm loads the activations in the same order); the dequantize puts the
columns in place with one register permute, so its stores are whole rows. 3 bits: the tiles of
the top two bits (the 2-bit layout in a block of 192 words) with the low bits or-ed in from the
block's last 64 words (:func:`block_codes`, :func:`pair_codes`)."""

from __future__ import annotations

import torch

from .lop3_pack import layout_bits

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - machines without triton
    triton = None

RT = 4  # row tiles per dequantize program

if triton is not None:
    _layout_bits = triton.constexpr_function(layout_bits)

    @triton.jit
    def block_words(Q, rows, N, G, NG, BITS: tl.constexpr):
        """The words of group G for ``rows`` (zero past N): [rows, 8·nu] uint32, in the order q
        (3 bits: the words of the top two bits)."""
        LB: tl.constexpr = _layout_bits(BITS)
        NF: tl.constexpr = 16 // LB  # fields per 16-bit half
        NU: tl.constexpr = 8 // NF  # word sets
        BLK: tl.constexpr = 64 * BITS  # words per block
        q = tl.arange(0, 8 * NU)[None, :]
        c, u, r1 = q // (2 * NU), q // 2 % NU, q % 2
        rr = rows[:, None] % 16  # = 2g + r0; lop3_pack: word 128u + 16g + 4c + 2r1 + r0
        word = 128 * u + 8 * (rr - rr % 2) + 4 * c + 2 * r1 + rr % 2
        blk = Q + (rows[:, None] // 16).to(tl.int64) * (NG * BLK) + G * BLK
        return tl.load(blk + word, mask=rows[:, None] < N, other=0).to(tl.uint32, bitcast=True)

    @triton.jit
    def pair_words(Q, prs, N, G, NG, BITS: tl.constexpr):
        """The words of group G for the row pairs ``prs`` (pair 8t + g: rows 16t + 2g + r0, zero past
        N) as [pairs, 16·nu] uint32, j = 16u + 4c + 2r1 + r0: each pair's 16 words of a word set lie
        contiguous in the block, so these are 16-byte loads (the tensor-core kernel's tile; 3 bits:
        the top two bits)."""
        LB: tl.constexpr = _layout_bits(BITS)
        NF: tl.constexpr = 16 // LB
        NU: tl.constexpr = 8 // NF
        BLK: tl.constexpr = 64 * BITS
        j = tl.arange(0, 16 * NU)[None, :]
        blk = Q + (prs[:, None] // 8).to(tl.int64) * (NG * BLK) + G * BLK + 16 * (prs[:, None] % 8)
        w = tl.load(blk + 128 * (j // 16) + j % 16, mask=2 * prs[:, None] < N, other=0)
        return w.to(tl.uint32, bitcast=True)

    @triton.jit
    def low_codes(wb, r0):
        """3 bits: the low bits [.., words, 16] of a tile of low-bit words, position e = 2f + h as
        word_codes (bit 16h + 2f + r0; r0, the row's parity, broadcast against [.., words, 1])."""
        e = tl.arange(0, 16)[None, None, :]
        return ((wb[:, :, None] >> (16 * (e % 2) + 2 * (e // 2) + r0)) & 1).to(tl.int32)

    @triton.jit
    def block_codes(Q, rows, N, G, NG, BITS: tl.constexpr):
        """The codes of group G for ``rows`` [rows, 8·nu, 2·nf] in word order (:func:`block_words`
        expanded; 3 bits: the top two bits' tile, the low bits or-ed in)."""
        if BITS == 3:
            q = tl.arange(0, 8)[None, :]  # = 2c + r1; lane 4g + c's low words at 128 + 2(4g + c) + r1
            blk = Q + (rows[:, None] // 16).to(tl.int64) * (NG * 64 * BITS) + G * 64 * BITS
            wb = tl.load(blk + 128 + 8 * (rows[:, None] % 16 // 2) + q, mask=rows[:, None] < N, other=0)
            top = word_codes(block_words(Q, rows, N, G, NG, BITS), 2)
            c = (top << 1) | low_codes(wb.to(tl.uint32, bitcast=True), (rows % 2)[:, None, None])
        else:
            c = word_codes(block_words(Q, rows, N, G, NG, BITS), BITS)
        return c

    @triton.jit
    def pair_codes(Q, prs, N, G, NG, BITS: tl.constexpr):
        """The codes of :func:`pair_words` [pairs, 16·nu, 2·nf] (3 bits: the low bits or-ed in; row
        parity r0 = j % 2)."""
        if BITS == 3:
            j = tl.arange(0, 16)[None, :]
            blk = Q + (prs[:, None] // 8).to(tl.int64) * (NG * 64 * BITS) + G * 64 * BITS + 128 + 8 * (prs[:, None] % 8)
            wb = tl.load(blk + j // 2, mask=2 * prs[:, None] < N, other=0)
            top = word_codes(pair_words(Q, prs, N, G, NG, BITS), 2)
            c = (top << 1) | low_codes(wb.to(tl.uint32, bitcast=True), (j % 2)[:, :, None])
        else:
            c = word_codes(pair_words(Q, prs, N, G, NG, BITS), BITS)
        return c

    @triton.jit
    def pair_tile(v, BITS: tl.constexpr, BN: tl.constexpr):
        """Expanded :func:`pair_words` [pairs, 16·nu, 2·nf] -> [BN, 128]: row 2·pair + r0, position
        p = 2·nf·q + e in word order. The permute moves r0, which the thread holds, to the rows."""
        LB: tl.constexpr = _layout_bits(BITS)
        NF: tl.constexpr = 16 // LB
        NU: tl.constexpr = 8 // NF
        v = tl.reshape(v, (BN // 2, NU, 4, 2, 2, 2 * NF))  # pair, u, c, r1, r0, e
        return tl.reshape(tl.permute(v, (0, 4, 2, 1, 3, 5)), (BN, 128))

    @triton.jit
    def _nest(a0, a1, a2, a3, a4, a5, a6, a7, NF: tl.constexpr):
        """a0..a(NF-1) on new minor axes (log2 NF of them, the index's top bit first). tl.join keeps
        the joined axis in the thread, so a thread expands whole words; the innermost join makes
        the most major of the new axes, hence the bit-reversed pairing."""
        if NF == 4:
            r = tl.join(tl.join(a0, a2), tl.join(a1, a3))
        else:
            r = tl.join(tl.join(tl.join(a0, a4), tl.join(a2, a6)), tl.join(tl.join(a1, a5), tl.join(a3, a7)))
        return r

    @triton.jit
    def _field(w, f: tl.constexpr, h: tl.constexpr, BITS: tl.constexpr):
        return (w >> (16 * h + BITS * (f % (16 // BITS)))) & ((1 << BITS) - 1)

    @triton.jit
    def _half(w, h: tl.constexpr, BITS: tl.constexpr):
        NF: tl.constexpr = 16 // BITS
        return _nest(_field(w, 0, h, BITS), _field(w, 1, h, BITS), _field(w, 2, h, BITS), _field(w, 3, h, BITS),
                     _field(w, 4, h, BITS), _field(w, 5, h, BITS), _field(w, 6, h, BITS), _field(w, 7, h, BITS), NF)

    @triton.jit
    def word_codes(w, BITS: tl.constexpr):
        """int32 codes [rows, words, 2·nf] of a word tile (position e = 2f + h of each word)."""
        return tl.reshape(tl.join(_half(w, 0, BITS), _half(w, 1, BITS)), (w.shape[0], w.shape[1], 32 // BITS))

    @triton.constexpr_function
    def _pair_asm(shift, mask2, magic):
        return (f"{{ .reg .b32 t; shr.b32 t, $1, {int(shift)}; lop3.b32 $0, t, {int(mask2)}, {int(magic)}, 0xea; }}")

    @triton.jit
    def _pair(w, f: tl.constexpr, BITS: tl.constexpr, MAGIC: tl.constexpr, BF16: tl.constexpr):
        """[..., 2] fp16 (bf16): the fields f of both halves, or-ed into the mantissa of MAGIC (one
        shift and one lop3 for two codes)."""
        if BF16:
            v = tl.inline_asm_elementwise(_pair_asm(BITS * (f % (16 // BITS)), ((1 << BITS) - 1) * 0x10001, MAGIC),
                                          "=r,r,r", [tl.join(w, w)], dtype=tl.bfloat16, is_pure=True, pack=2)
        else:
            v = tl.inline_asm_elementwise(_pair_asm(BITS * (f % (16 // BITS)), ((1 << BITS) - 1) * 0x10001, MAGIC),
                                          "=r,r,r", [tl.join(w, w)], dtype=tl.float16, is_pure=True, pack=2)
        return v

    @triton.jit
    def word_values(w, BITS: tl.constexpr, MAGIC: tl.constexpr, BF16: tl.constexpr):
        """fp16 (bf16) values v0 + k [rows, words, 2·nf] of a word tile, as :func:`word_codes` (GPU
        only: inline PTX), where MAGIC is the bits of v0 (doubled) at whose unit the mantissa holds k
        exactly: fp16 1024, bf16 128."""
        NF: tl.constexpr = 16 // BITS
        v = _nest(_pair(w, 0, BITS, MAGIC, BF16), _pair(w, 1, BITS, MAGIC, BF16), _pair(w, 2, BITS, MAGIC, BF16),
                  _pair(w, 3, BITS, MAGIC, BF16), _pair(w, 4, BITS, MAGIC, BF16), _pair(w, 5, BITS, MAGIC, BF16),
                  _pair(w, 6, BITS, MAGIC, BF16), _pair(w, 7, BITS, MAGIC, BF16), NF)  # [BN, 8nu, h, f bits..]
        if NF == 4:
            v = tl.permute(v, (0, 1, 3, 4, 2))
        else:
            v = tl.permute(v, (0, 1, 3, 4, 5, 2))
        return tl.reshape(v, (w.shape[0], w.shape[1], 2 * NF))

    @triton.jit
    def word_order_pairs(BITS: tl.constexpr):
        """[64, 2]: the columns of word-order positions 2i and 2i + 1 (see the module doc), built
        as pair start + (0, 1) so that Triton sees the pairs contiguous and 4-byte aligned."""
        LB: tl.constexpr = _layout_bits(BITS)
        NF: tl.constexpr = 16 // LB
        NU: tl.constexpr = 8 // NF
        i = tl.arange(0, 64)
        q, f = i // NF, i % NF
        c, u, r1 = q // (2 * NU), q // 2 % NU, q % 2
        return (32 * c + 4 * (u * NF + f) + 2 * r1)[:, None] + tl.arange(0, 2)[None, :]

    @triton.jit
    def word_order_cols(BITS: tl.constexpr):
        """[128]: the column of each word-order position."""
        return tl.reshape(word_order_pairs(BITS), (128,))

    @triton.jit
    def lop3_dequant_kernel(Q, S, OUT, N, K, SP, NG, two_d, zb, BITS: tl.constexpr, RT: tl.constexpr):
        pid_t = tl.program_id(0)
        G = tl.program_id(1)
        NF: tl.constexpr = 16 // _layout_bits(BITS)
        R: tl.constexpr = 16 * RT
        r = pid_t * R + tl.arange(0, R)
        code = tl.reshape(block_codes(Q, r, N, G, NG, BITS), (R, 128))  # [R, (c, u, r1, f, h)]
        code = tl.permute(tl.reshape(code, (R, 32 // NF, 2, NF, 2)), (0, 1, 3, 2, 4))  # -> (c, u, f, r1, h)
        code = tl.reshape(code, (R, 128))
        mask = r[:, None] < N
        s = tl.load(S + G * SP + r, mask=r < N, other=0.0).to(tl.float32)  # 1-D: one load per row
        v = s[:, None] * (code.to(tl.float32) * two_d - zb)
        j = tl.arange(0, 128)[None, :]
        tl.store(OUT + r[:, None].to(tl.int64) * K + G * 128 + j, v.to(OUT.dtype.element_ty), mask=mask)


def lop3_dequantize(words: torch.Tensor, scales: torch.Tensor, n: int, k: int, bits: int, two_d: float, zb: float,
                    dtype: torch.dtype, out: torch.Tensor | None = None) -> torch.Tensor:
    """s · (k · 2^d - z_b) as [N, K] ``dtype`` (``scales``: [groups, N + 16], lop3_pack.pad_scales)."""
    if out is None:
        out = torch.empty(n, k, dtype=dtype, device=words.device)
    grid = (-(-n // (16 * RT)), k // 128)
    lop3_dequant_kernel[grid](words, scales, out, n, k, scales.shape[1], k // 128, two_d, zb, BITS=bits, RT=RT,
                              num_warps=4)
    return out
