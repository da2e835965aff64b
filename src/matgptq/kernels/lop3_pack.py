"""The ``lop3`` layout: a fixed-width 2-, 3- or 4-bit slice packed for a one-instruction decode.

Every 32-bit word holds the two codes of one fp16 pair of an ``mma.m16n8k16`` A fragment at bits
p and 16 + p, so one ``lop3`` ((w >> sh) & mask_p) | magic_p makes the exact fp16 pair
(2^(10-p) + k, 2^(10-p) + k'): no field gathering, no permutes. The offsets 2^(10-p) leave the
sums through a second mma on the activations (:mod:`.lop3_kernel`).

Block (row tile t = rows 16t..16t+15, group G = columns 128G..128G+127): 64·b words. Lane
L = 4g + c (g 0..7, c 0..3) owns words 128u + 4L + r (r = 2r1 + r0, u the word set: one at 2
bits, two at 4), so each 16-byte copy of a warp covers whole sectors. Word (u, L, r) holds the
code of row 16t + 2g + r0 at column 128G + 32c + 4(u·nf + f) + 2r1 + h in field f of half h
(bits 16h + b·f; nf = 16 / b fields per half). Step j = u·nf + f of the group's eight 16-column
mma steps reads field f of word set u: at 2 bits from w << 4, w or w >> 6 (p = 4, 6 or 8), at 4
bits from w << 4, w, w >> 4, w >> 8 (p = 4).

3 bits (dense, 192 words a block): words 0-127 hold the top two bits k >> 1 exactly as the
2-bit layout, words 128 + 2L + r1 the low bits k & 1 of lane L's registers 2r1 + r0, bit
16h + 2j + r0 for step j. A step's pair takes two lop3s: the top bits at p_j = P2[j] (shift
SH2[j]) or-ed into the magic of 2^(10 - P3[j]), then the low bit shifted to P3[j] = P2[j] - 1
(:func:`low_bit_shift`): the fp16 pair (2^(10-P3[j]) + k, ..) with the whole 3-bit code.

Blocks are stored tile-major ([N/16, K/128] blocks), so a warp streams its row tile's groups in
order. Pure tensor math on the codes' own device.
"""

from __future__ import annotations

import torch

LOP3_BITS = (2, 3, 4)
GROUP = 128  # columns per block: the layout's scale group
ROWS = 16  # rows per block: one mma row tile
P2 = (4, 6, 4, 6, 8, 4, 6, 8)  # 2 bits: mantissa bit of step j's field after its shift
SH2 = (4, 4, 0, 0, 0, -6, -6, -6)  # 2 bits: shift of the word (+ left, - right) for step j
SH4 = (4, 0, -4, -8)  # 4 bits: shift for field f = j % 4 (p = 4)
P3 = tuple(p - 1 for p in P2)  # 3 bits: mantissa bit of step j's low bit (its top bits at P2[j])


def low_bit_shift(j: int, r0: int) -> int:
    """3 bits: the shift (+ left, - right) that moves step j's low bit of register parity r0 (bit
    2j + r0 of each half) to P3[j]; at most 3 left or 8 right, so no bit crosses into the other
    half's field."""
    return P3[j] - 2 * j - r0


def layout_bits(bits: int) -> int:
    """The word layout a width's (top) codes use: 3 bits keep their top two in the 2-bit one."""
    return 2 if bits == 3 else bits


def step_offsets(bits: int) -> list[float]:
    """2^(10-p) of each of the eight steps: what the lop3 adds to every code."""
    return [2.0 ** (10 - p) for p in {2: P2, 3: P3}.get(bits, (4,) * 8)]


def _dims(bits: int) -> tuple[int, int]:
    nf = 16 // bits  # fields per 16-bit half
    return nf, 8 // nf  # and word sets


def check_lop3(n: int, k: int, bits: int) -> None:
    """The shapes and widths the layout holds, with the fix for the others."""
    if bits not in LOP3_BITS:
        raise ValueError(f"layout='lop3' holds 2-, 3- or 4-bit slices, not bits={bits}; use layout='fixed'")
    if n % ROWS or k % GROUP:
        raise ValueError(f"layout='lop3' needs out features a multiple of {ROWS} and in features a multiple of "
                         f"{GROUP}, not {n} x {k}; use layout='fixed'")


def _low_shifts(device) -> torch.Tensor:
    """3 bits: where each low bit sits in its word, [h, j, r0] -> 16h + 2j + r0."""
    return (16 * torch.arange(2, device=device)[:, None, None] + 2 * torch.arange(8, device=device)[:, None]
            + torch.arange(2, device=device))


def _low_words(codes: torch.Tensor) -> torch.Tensor:
    """3 bits: the low bits k & 1 as [N/16, K/128, 64] words (lane L's at 2L + r1)."""
    n, k = codes.shape
    c = (codes.to(torch.int64) & 1).contiguous().view(n // 16, 8, 2, k // 128, 4, 8, 2, 2)  # [t, g, r0, G, c, j, r1, h]
    c = c.permute(0, 3, 1, 4, 6, 7, 5, 2)  # [t, G, g, c, r1, h, j, r0]
    return (c << _low_shifts(codes.device)).sum(dim=(-1, -2, -3)).reshape(n // 16, k // 128, 64)


def _signed(w: torch.Tensor) -> torch.Tensor:
    return torch.where(w >= 1 << 31, w - (1 << 32), w).to(torch.int32)


def pack_lop3(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """codes [N, K] (< 2^bits, any integer dtype) -> int32 [N/16 * K/128 * 64·bits] words."""
    n, k = codes.shape
    check_lop3(n, k, bits)
    if bits == 3:
        top = pack_lop3(codes.to(torch.int64) >> 1, 2).view(n // 16, k // 128, 128)
        return torch.cat([top, _signed(_low_words(codes))], dim=2).reshape(-1).contiguous()
    nf, nu = _dims(bits)
    c = codes.to(torch.int64).contiguous().view(n // 16, 8, 2, k // 128, 4, nu, nf, 2, 2)  # [t, g, r0, G, c, u, f, r1, h]
    c = c.permute(0, 3, 5, 1, 4, 7, 2, 8, 6)  # [t, G, u, g, c, r1, r0, h, f]
    dev = codes.device
    sh = 16 * torch.arange(2, device=dev)[:, None] + bits * torch.arange(nf, device=dev)[None, :]
    w = (c << sh).sum(dim=(-1, -2))  # disjoint fields: sum == or
    return _signed(w).reshape(-1).contiguous()


def unpack_lop3(words: torch.Tensor, n: int, k: int, bits: int) -> torch.Tensor:
    """Inverse of :func:`pack_lop3`: int32 [N, K] codes."""
    check_lop3(n, k, bits)
    if bits == 3:
        blocks = words.view(n // 16, k // 128, 192)
        top = unpack_lop3(blocks[:, :, :128].reshape(-1), n, k, 2)
        low = blocks[:, :, 128:].reshape(n // 16, k // 128, 8, 4, 2)  # [t, G, g, c, r1]
        b = (low[..., None, None, None] >> _low_shifts(words.device).to(torch.int32)) & 1  # [t, G, g, c, r1, h, j, r0]
        b = b.permute(0, 2, 7, 1, 3, 6, 4, 5).reshape(n, k)  # [t, g, r0, G, c, j, r1, h]
        return (top << 1) | b
    nf, nu = _dims(bits)
    w = words.view(n // 16, k // 128, nu, 8, 4, 2, 2)  # [t, G, u, g, c, r1, r0]
    dev = words.device
    sh = (16 * torch.arange(2, device=dev)[:, None] + bits * torch.arange(nf, device=dev)[None, :]).to(torch.int32)
    f = (w[..., None, None] >> sh) & ((1 << bits) - 1)  # [t, G, u, g, c, r1, r0, h, f]
    return f.permute(0, 3, 6, 1, 4, 2, 8, 5, 7).reshape(n, k).contiguous()


def pad_scales(scales_t: torch.Tensor) -> torch.Tensor:
    """Scales [groups, N] as the kernel reads them: fp16, each group row padded by 16 elements
    (rows stay 32-byte aligned)."""
    return torch.nn.functional.pad(scales_t.to(torch.float16), (0, 16)).contiguous()
