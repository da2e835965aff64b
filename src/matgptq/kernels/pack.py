"""Packed layouts of integer codes, built with vectorised torch ops on the codes' own device.

One layout serves both kinds of packing: a code of ``code_bits`` bits is split MSB-first into
*parts* of width 1, 2, 4 or 8 and every part is stored densely, so reading a prefix of the
parts reads exactly that many bits per weight.

- ``fixed``: the b-bit slice (``round`` codes precomputed), parts 2=[2], 3=[2,1], 4=[4],
  5=[4,1], 6=[4,2], 7=[4,2,1], 8=[8]: b bits per weight.
- ``resident``: the master codes, parts [2,1,1,...,1] (M-1 parts). A b-bit read takes the first
  b-1 parts (exactly b bits); the ``round`` rule also reads the next 1-bit part (b+1 bits).
  Its parts are *strided* (unit u of a part of width p in chunk u % p, field u // p) and stored
  rotated: chunk c of part j left by M-2-j+c bits (:func:`resident_rotations`; M-2+c for the
  2-bit part), so that one unit's bits of every part sit (M-b)+u bits above their place in a
  b-bit code: a kernel masks each part once, ors them and rotates the sum once, whatever b:
  b instructions per four codes.

Storage: ``qweight`` int32 [KT, CH, N, V] with V = 16 words per row and chunk, KT = K/512
k-tiles (K padded with zero codes) and CH = code_bits chunks per k-tile (a part of width p owns
p consecutive chunks). Inside a k-tile, weight k = 512*kt + 16*(8*i + u) + t (lane i in 0..3,
unit u in 0..7, t in 0..15); a part of width p keeps unit u in chunk u // (8/p) at bit
8*i + p*(u % (8/p)). So one 16-word chunk row holds 4 byte lanes x (8/p) units, and the kernels
can turn any part into byte-lane codes with one shift and one mask, never a reshape. Rows of a
chunk are contiguous, so a tile of rows is one contiguous read whatever its height.

Scales and zeros are stored transposed, [groups, N], so a kernel reads a row tile's scales of
one group contiguously.

- ``lop3``: a fixed-width 2-, 3- or 4-bit slice (symmetric grid, groups of 128) in the order of
  an mma fragment, decoded by one ``lop3`` per fp16 pair (two at 3 bits; :mod:`.lop3_pack`): the batch 1-16
  decode layout. ``qweight`` is its int32 words, ``scales`` fp16 [groups, N + 16].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..quant.grid import slice_codes, sliced_zero
from .lop3_pack import GROUP as LOP3_GROUP
from .lop3_pack import LOP3_BITS, check_lop3, pack_lop3, pad_scales, unpack_lop3

V = 16  # int32 words per row per chunk
UNIT = V  # weights per (lane, unit) slice
KTILE = 32 * V  # weights per row per k-tile
LAYOUTS = ("fixed", "resident", "lop3")
SINGLE_WIDTH = ("fixed", "lop3")  # layouts that hold one slice

FIXED_PARTS = {1: (1,), 2: (2,), 3: (2, 1), 4: (4,), 5: (4, 1), 6: (4, 2), 7: (4, 2, 1), 8: (8,)}


def resident_parts(master_bits: int) -> tuple[int, ...]:
    if master_bits == 1:
        return (1,)
    return (2,) + (1,) * (master_bits - 2)


def resident_rotations(master_bits: int) -> tuple[int, ...]:
    """Left rotation (bits, of each 32-bit word) of the first chunk of every resident part
    (chunk c of a part: + c): M-p for the first part (p = its width), M-2-j for 1-bit part j.
    Parts are strided, so unit u of byte lane i of 1-bit part j sits at 8i + u + M-2-j, where a
    b-bit code wants it at 8i + b-2-j, and the 2-bit part's field of unit u (chunk u % 2, field
    u // 2) at 8i + u + M-2, where the code's top two bits go at 8i + b-2: the same right
    rotation, u + M - b, for every part."""
    parts = resident_parts(master_bits)
    return tuple(master_bits - parts[0] if j == 0 else master_bits - 2 - j for j in range(len(parts)))


@dataclass
class PackedWeight:
    """Packed codes of one [N, K] weight plus everything a kernel needs to read them.

    ``scales``: [G, N] (storage dtype); ``zeros``: uint8 [G, N] master zeros or None when every
    zero is 2^(M-1) (symmetric). ``group_size`` is None for one group per row.
    """

    qweight: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None
    parts: tuple[int, ...]
    layout: str
    master_bits: int
    slicing: str
    group_size: int | None
    n: int
    k: int
    fixed_bits: int | None = None  # the width a fixed layout serves

    @property
    def code_bits(self) -> int:
        return sum(self.parts)

    @property
    def rotations(self) -> tuple[int, ...] | None:
        return resident_rotations(self.master_bits) if self.layout == "resident" else None

    @property
    def strided(self) -> bool:
        """Unit u of a part of width p in chunk u % p (resident) rather than chunk u // (8/p)."""
        return self.layout == "resident"

    @property
    def k_tiles(self) -> int:
        return self.qweight.shape[0]

    def servable(self, bits: int) -> bool:
        if self.layout in SINGLE_WIDTH:
            return bits == self.fixed_bits
        return 1 <= bits <= self.master_bits

    def check_bits(self, bits: int) -> None:
        if not self.servable(bits):
            if self.layout in SINGLE_WIDTH:
                raise ValueError(
                    f"this {self.layout!r} layout holds only the {self.fixed_bits}-bit slice; pack again "
                    f"for bits={bits} or use layout='resident'"
                )
            raise ValueError(f"bits={bits} cannot be served from {self.master_bits}-bit master codes; "
                             f"choose 1..{self.master_bits}")

    def read_plan(self, bits: int) -> "ReadPlan":
        """Which parts a ``bits``-wide read touches, and the constants of w = s*(k*2^d - z_b)."""
        self.check_bits(bits)
        m = self.master_bits
        d = m - bits
        if self.layout in SINGLE_WIDTH:
            nparts, rnd = len(self.parts), False
        else:
            nparts = 1 if bits <= 2 else bits - 1
            rnd = self.slicing == "round" and d > 0 and bits >= 2  # b = 1 rounds inside the 2-bit part
        widths = self.parts[:nparts]
        zoff = ((1 << d) - 1) / 2 if (self.slicing == "nested" and d > 0) else 0.0
        return ReadPlan(bits=bits, widths=widths, round_part=rnd, zoff=zoff, two_d=float(1 << d),
                        two_m=float(1 << m), zconst=float(1 << (m - 1)))

    def bytes_read(self, bits: int) -> int:
        """Bytes a ``bits``-wide matmul reads from the weight: packed codes, scales and zeros."""
        plan = self.read_plan(bits)
        if self.layout == "lop3":  # the words, and the scales without their row padding
            return self.qweight.numel() * 4 + self.scales.shape[0] * self.n * 2
        chunks = sum(plan.widths) + int(plan.round_part)
        n = self.k_tiles * chunks * self.n * V * 4
        n += self.scales.numel() * self.scales.element_size()
        if self.zeros is not None:
            n += self.zeros.numel()
        return n

    def buffers(self) -> dict[str, torch.Tensor | None]:
        return {"qweight": self.qweight, "scales_t": self.scales, "zeros_t": self.zeros}

    def with_buffers(self, qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None) -> "PackedWeight":
        return PackedWeight(qweight, scales, zeros, self.parts, self.layout, self.master_bits, self.slicing,
                            self.group_size, self.n, self.k, self.fixed_bits)


@dataclass(frozen=True)
class ReadPlan:
    bits: int
    widths: tuple[int, ...]  # widths of the parts read, MSB first
    round_part: bool  # also read the next 1-bit part (round-half-up bit)
    zoff: float  # z_b = z - zoff
    two_d: float
    two_m: float
    zconst: float  # the symmetric zero 2^(M-1)

    @property
    def kernel_ok(self) -> bool:
        """The kernels read exactly ``bits`` code bits (+1 rounding bit); b = 1 from a 2-bit
        resident part is served by the plain-torch path."""
        return sum(self.widths) == self.bits

    @property
    def pw(self) -> int:
        """Part widths packed 4 bits each (a kernel constant)."""
        return sum(w << (4 * j) for j, w in enumerate(self.widths))


def _to_i32(x: torch.Tensor) -> torch.Tensor:
    """int64 values in [0, 2^32) -> int32 with the same bits."""
    return torch.where(x >= (1 << 31), x - (1 << 32), x).to(torch.int32)


def _rotl(words: torch.Tensor, r: int) -> torch.Tensor:
    """Rotate int64-held 32-bit words left by r."""
    r %= 32
    return words if r == 0 else ((words << r) | (words >> (32 - r))) & 0xFFFFFFFF


def pack_parts(codes: torch.Tensor, parts: tuple[int, ...], row_block: int = 1024,
               rotations: tuple[int, ...] | None = None, strided: bool = False) -> torch.Tensor:
    """[N, K] integer codes of sum(parts) bits -> int32 [KT, sum(parts), N, V] (see module doc);
    ``rotations``: rotate chunk c of part j left by rotations[j] + c bits (c = 0 when not
    ``strided``: then every chunk of part j by rotations[j]); ``strided``: unit u of a part of
    width p in chunk u % p at field u // p (else chunk u // (8/p), field u % (8/p))."""
    n, k = codes.shape
    total = sum(parts)
    kt = max(1, -(-k // KTILE))
    out = torch.empty(kt, total, n, V, dtype=torch.int32, device=codes.device)
    lanes = torch.arange(4, device=codes.device)
    rotations = rotations or (0,) * len(parts)
    for r0 in range(0, n, row_block):
        c = codes[r0:r0 + row_block].to(torch.int64)
        rows = c.shape[0]
        if k != kt * KTILE:
            c = torch.nn.functional.pad(c, (0, kt * KTILE - k))
        c = c.view(rows, kt, 4, 8, V)  # [row, kt, lane, unit, t]
        lo = total
        ch = 0
        for p, rot in zip(parts, rotations):
            lo -= p
            f = (c >> lo) & ((1 << p) - 1)
            per = 8 // p
            if strided:  # unit = r * p + chunk
                f = f.view(rows, kt, 4, per, p, V).transpose(3, 4)
            else:  # unit = chunk * per + r
                f = f.view(rows, kt, 4, p, per, V)
            shift = (8 * lanes.view(4, 1, 1, 1) + p * torch.arange(per, device=codes.device).view(1, 1, per, 1))
            words = (f << shift).sum(dim=(2, 4))  # disjoint bit fields: sum == or; [row, kt, p, V]
            words = torch.stack([_rotl(words[:, :, c], rot + (c if strided else 0)) for c in range(p)], dim=2)
            out[:, ch:ch + p, r0:r0 + rows] = _to_i32(words).permute(1, 2, 0, 3)
            ch += p
    return out


def unpack_parts(qweight: torch.Tensor, parts: tuple[int, ...], n: int, k: int, nparts: int | None = None,
                 rotations: tuple[int, ...] | None = None, strided: bool = False) -> torch.Tensor:
    """Inverse of :func:`pack_parts` for the first ``nparts`` parts: int32 [N, K] codes of
    sum(parts[:nparts]) bits (the MSBs of the stored codes)."""
    nparts = len(parts) if nparts is None else nparts
    rotations = rotations or (0,) * len(parts)
    kt = qweight.shape[0]
    width = sum(parts[:nparts])
    q = qweight.to(torch.int64) & 0xFFFFFFFF  # [kt, CH, N, V]
    codes = torch.zeros(n, kt, 4, 8, V, dtype=torch.int64, device=qweight.device)
    lo = width
    ch = 0
    for p, rot in zip(parts[:nparts], rotations):
        lo -= p
        per = 8 // p
        words = q[:, ch:ch + p].permute(2, 0, 1, 3)  # [N, kt, p, V]
        words = torch.stack([_rotl(words[:, :, c], -(rot + (c if strided else 0))) for c in range(p)], dim=2)
        for i in range(4):
            for r in range(per):
                f = (words >> (8 * i + p * r)) & ((1 << p) - 1)  # [N, kt, p(chunk), V]
                units = slice(r * p, (r + 1) * p) if strided else slice(r, None, per)  # of chunks 0..p-1
                codes[:, :, i, units] |= f << lo
        ch += p
    return codes.view(n, kt * KTILE)[:, :k].to(torch.int32)


def pack(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, *, master_bits: int, slicing: str,
         group_size: int | None, layout: str = "resident", bits: int | None = None) -> PackedWeight:
    """Pack master codes [N, K] (storage order) with scales/zeros [N, G] for serving.

    ``layout="fixed"`` packs the ``bits``-wide slice under ``slicing`` (the ``round`` rule's
    codes are computed here); ``layout="resident"`` packs the master codes themselves.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}; use one of {LAYOUTS}")
    n, k = codes.shape
    if group_size is not None and group_size >= k:
        group_size = None
    if scales.shape[1] == 1:
        group_size = None
    if layout == "lop3":
        return _pack_lop3(codes, scales, zeros, master_bits, slicing, group_size, bits)
    if layout == "fixed":
        bits = master_bits if bits is None else int(bits)
        if not 1 <= bits <= master_bits:
            raise ValueError(f"bits={bits} cannot be sliced from {master_bits}-bit codes; choose 1..{master_bits}")
        parts = FIXED_PARTS[bits]
        q = slice_codes(codes.to(torch.int32), master_bits, bits, slicing)
    else:
        bits = None
        parts = resident_parts(master_bits)
        q = codes
    res = layout == "resident"
    qweight = pack_parts(q, parts, rotations=resident_rotations(master_bits) if res else None, strided=res)
    z = zeros.to(torch.int32)
    sym = bool((z == (1 << (master_bits - 1))).all())
    zeros_t = None if sym else zeros.to(torch.uint8).t().contiguous()
    return PackedWeight(qweight, scales.t().contiguous(), zeros_t, parts, layout, master_bits, slicing,
                        group_size, n, k, bits)


def _pack_lop3(codes, scales, zeros, master_bits, slicing, group_size, bits) -> PackedWeight:
    """The ``lop3`` layout, after checking what it holds (each miss names the fix)."""
    n, k = codes.shape
    if bits is None or int(bits) not in LOP3_BITS:
        raise ValueError(f"layout='lop3' packs one 2-, 3- or 4-bit slice; pass bits=2, 3 or 4 (got {bits}), "
                         "or use layout='fixed' for other widths")
    bits = int(bits)
    if bits > master_bits:
        raise ValueError(f"bits={bits} cannot be sliced from {master_bits}-bit codes; choose 1..{master_bits}")
    check_lop3(n, k, bits)
    if (group_size or k) != LOP3_GROUP or scales.shape[1] != k // LOP3_GROUP:
        raise ValueError(f"layout='lop3' needs scale groups of {LOP3_GROUP} columns, not group_size={group_size}; "
                         "use layout='fixed'")
    if not bool((zeros.to(torch.int32) == (1 << (master_bits - 1))).all()):
        raise ValueError("layout='lop3' serves symmetric grids (every zero 2^(M-1)); this weight has its own zeros: "
                         "use layout='fixed'")
    s16 = scales.to(torch.float16)
    if not torch.equal(s16.to(scales.dtype), scales) or not bool(torch.isfinite(s16).all()):
        raise ValueError(f"layout='lop3' keeps fp16 scales and these {scales.dtype} scales do not convert exactly "
                         "(out of fp16's normal range); use layout='fixed'")
    q = slice_codes(codes.to(torch.int32), master_bits, bits, slicing)
    return PackedWeight(pack_lop3(q, bits), pad_scales(s16.t()), None, (bits,), "lop3", master_bits, slicing,
                        group_size, n, k, bits)


def unpack_codes(pw: PackedWeight, bits: int) -> torch.Tensor:
    """The b-bit codes k of a packed weight, int32 [N, K] (what a kernel computes)."""
    plan = pw.read_plan(bits)
    if pw.layout == "lop3":
        return unpack_lop3(pw.qweight, pw.n, pw.k, bits)
    if pw.layout == "fixed":
        return unpack_parts(pw.qweight, pw.parts, pw.n, pw.k)
    nparts = len(plan.widths) + int(plan.round_part)
    top = unpack_parts(pw.qweight, pw.parts, pw.n, pw.k, nparts, pw.rotations, pw.strided)
    width = sum(pw.parts[:nparts])
    if width > bits:  # the round bit (b+1 bits read), or b = 1 inside the 2-bit part
        return slice_codes(top, width, bits, pw.slicing)
    return top


def dequantize_packed(pw: PackedWeight, bits: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Plain-torch dequantization [N, K] (storage column order) at ``bits``."""
    plan = pw.read_plan(bits)
    k = unpack_codes(pw, bits).to(torch.float64 if dtype == torch.float64 else torch.float32)
    s = (pw.scales[:, :pw.n] if pw.layout == "lop3" else pw.scales).t().to(k.dtype)
    z = (torch.full_like(s, plan.zconst) if pw.zeros is None else pw.zeros.t().to(k.dtype))
    zb = sliced_zero(z, pw.master_bits, bits, pw.slicing)
    if pw.group_size is not None and s.shape[1] > 1:
        s = s.repeat_interleave(pw.group_size, dim=1)[:, : pw.k]
        zb = zb.repeat_interleave(pw.group_size, dim=1)[:, : pw.k]
    return (s * (k * plan.two_d - zb)).to(dtype)
