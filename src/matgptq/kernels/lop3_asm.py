"""PTX text for the ``lop3`` layout's kernel (:mod:`.lop3_kernel`): the decode-and-mma of two
steps, the offset mma, a group's end, and the lane-private copy ring. Plain strings built from
constants, so they are checked on any machine; Triton makes them ``constexpr`` functions.

Lane 4g + c of an ``mma.m16n8k16`` holds A rows g, g + 8 and B column g (a batch row); the
layout (:mod:`.lop3_pack`) puts rows 2g, 2g + 1 of the row tile at mma rows g, g + 8.
"""

from __future__ import annotations

from .lop3_pack import P2, P3, SH2, SH4, layout_bits, low_bit_shift

try:
    import triton

    constexpr_function = triton.constexpr_function
except (ImportError, AttributeError):  # pragma: no cover - machines without triton
    def constexpr_function(fn):
        return fn

# the layout's own definitions, callable from the constexpr functions below (Triton's dependency
# scan accepts only constexpr functions there)
_layout_bits = constexpr_function(layout_bits)
_low_bit_shift = constexpr_function(low_bit_shift)

MMA = "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"
FP16_ONE = 0x3C00


@constexpr_function
def _shift(src, sh, name):
    """The instruction that shifts ``src`` by sh (+ left, - right) into ``name`` (none when sh is
    0), and the register that holds the result."""
    if not sh:
        return [], src
    return [f"{'shl.b32' if sh > 0 else 'shr.u32'} {name}, {src}, {abs(sh)};"], name


@constexpr_function
def code_asm(bits, j0, first):
    """Steps j0, j0+1: $0-3 the result, $4-7 the lane's four words, $8-11 the activations of the
    two steps (b0, b1 of j0, then of j0+1), $12-15 the accumulator (first: zero). 3 bits: $8-9
    the lane's two low-bit words (10-11 copies), the activations at $12-15, the accumulator at
    $16-19."""
    bits, j0 = int(bits), int(j0)
    xo = 12 if bits == 3 else 8
    lines = ["{", ".reg .b32 s<4>, l<4>, a<8>;", ".reg .f32 e<4>, z;", "mov.f32 z, 0f00000000;"]
    for jj in range(2):
        j = j0 + jj
        sh, p = (SH2[j], P2[j]) if bits in (2, 3) else (SH4[j % 4], 4)
        q = P3[j] if bits == 3 else p  # the mantissa bit of the code's lowest bit
        mask = (((1 << _layout_bits(bits)) - 1) << p) * 0x10001  # 3 bits: the top two
        magic = ((25 - q) << 10) * 0x10001  # the fp16 exponent of 2^(10-q): the pair (2^(10-q) + k, ..)
        for r in range(4):
            a = f"a{4 * jj + r}"
            ins, src = _shift(f"${4 + r}", sh, f"s{r}")
            lines += ins
            lines.append(f"lop3.b32 {a}, {src}, {mask}, {magic}, 0xEA;")  # (src & mask) | magic
            if bits == 3:  # | the low bit, shifted to P3[j]
                ins, low = _shift(f"${8 + r // 2}", _low_bit_shift(j, r % 2), f"l{r}")
                lines += ins
                lines.append(f"lop3.b32 {a}, {low}, {(1 << q) * 0x10001}, {a}, 0xEA;")
    acc = "{z, z, z, z}" if first else f"{{${xo + 4}, ${xo + 5}, ${xo + 6}, ${xo + 7}}}"
    lines.append(f"{MMA} {{e0, e1, e2, e3}}, {{a0, a1, a2, a3}}, {{${xo}, ${xo + 1}}}, {acc};")
    lines.append(f"{MMA} {{$0, $1, $2, $3}}, {{a4, a5, a6, a7}}, {{${xo + 2}, ${xo + 3}}}, {{e0, e1, e2, e3}};")
    lines.append("}")
    return "\n".join(lines)


@constexpr_function
def off_asm(first):
    """Two steps of the offset mma: $4-7 / $8-11 the A quads {1, off, 1, off} of the two steps,
    $12-15 the activations, $16-19 the accumulator. Its rows 0-7 give sum x, rows 8-15 the
    offset-weighted sum."""
    acc = "{z, z, z, z}" if first else "{$16, $17, $18, $19}"
    return "\n".join(["{", ".reg .f32 e<4>, z;", "mov.f32 z, 0f00000000;",
                      f"{MMA} {{e0, e1, e2, e3}}, {{$4, $5, $6, $7}}, {{$12, $13}}, {acc};",
                      f"{MMA} {{$0, $1, $2, $3}}, {{$8, $9, $10, $11}}, {{$14, $15}}, {{e0, e1, e2, e3}};",
                      "}"])


@constexpr_function
def f32_hex(v):
    """A float as a PTX fp32 literal, bit for bit (0fXXXXXXXX)."""
    st = __import__("struct")  # (Triton's dependency scan rejects a module-level struct here)
    return f"0f{st.unpack('I', st.pack('f', float(v)))[0]:08X}"


@constexpr_function
def end_asm(zc, one_row):
    """A group's end, acc += s * (d - offsum - z * sum_x): $4-7 the code sums d, $8-11 the offset
    mma's (sum x of batch 2c, 2c+1, then the offset sums), $12-13 the scales of rows 2g, 2g+1
    (an fp16 pair, twice), $14-17 acc; zc the one zero of the slice (a float). $0-3 the new acc.
    ``one_row``: batch 1, the odd elements (batch row 1) are left as they are."""
    lines = ["{", ".reg .f32 s0, s1, z0, t<4>;", ".reg .b16 h0, h1;", "mov.b32 {h0, h1}, $12;",
             "cvt.f32.f16 s0, h0;", "cvt.f32.f16 s1, h1;", f"mov.b32 z0, {f32_hex(zc)};"]
    for e in range(4):
        if one_row and e % 2:
            lines.append(f"mov.f32 ${e}, ${14 + e};")
            continue
        ss, b = ("s0" if e < 2 else "s1"), e % 2
        lines.append(f"fma.rn.f32 t{e}, z0, ${8 + b}, ${10 + b};")
        lines.append(f"sub.f32 t{e}, ${4 + e}, t{e};")
        lines.append(f"fma.rn.f32 ${e}, {ss}, t{e}, ${14 + e};")
    lines.append("}")
    return "\n".join(lines)


@constexpr_function
def block_t_asm(zc):
    """Batch 1, after the offset mma of a block of eight groups (B column n: group n of the block):
    $4-7 its result in the lane 4g + c (sum x of groups 2c, 2c+1, then their offset sums) ->
    $0, $1 the corrections offsum + z * sum x of groups 2c, 2c + 1 ($2, $3: copies)."""
    return ("{ .reg .f32 z0; "
            f"mov.b32 z0, {f32_hex(zc)}; fma.rn.f32 $0, z0, $4, $6; fma.rn.f32 $1, z0, $5, $7; "
            "mov.f32 $2, $0; mov.f32 $3, $1; }")


@constexpr_function
def end_block_asm(n):
    """Batch 1, group n (0-7) of a block: acc += s * (d - t_n) on the elements of batch row 0,
    t_n (block_t_asm's correction of group n) fetched from lane n // 2, where it is element n % 2.
    $4-7 d, $8-11 the lane's corrections, $12 the scale pair, $14-17 acc; the odd elements (batch
    row 1) are left as they are. The same arithmetic as end_asm's, so the same bits."""
    n = int(n)
    return "\n".join(["{", ".reg .f32 s0, s1, tg, t0, t2;", ".reg .b16 h0, h1;", "mov.b32 {h0, h1}, $12;",
                      "cvt.f32.f16 s0, h0;", "cvt.f32.f16 s1, h1;",
                      f"shfl.sync.idx.b32 tg, ${8 + n % 2}, {n // 2}, 0x1f, 0xffffffff;",
                      "sub.f32 t0, $4, tg;", "fma.rn.f32 $0, s0, t0, $14;", "mov.f32 $1, $15;",
                      "sub.f32 t2, $6, tg;", "fma.rn.f32 $2, s1, t2, $16;", "mov.f32 $3, $17;", "}"])


def offset_quads(bits: int = 2) -> list[int]:
    """The offset mma's A registers {1, 64, 1, 64}, {1, 16, ..}, {1, 4, ..} as int32 fp16 pairs
    (3 bits: 128, 32, 8, the offsets of its steps at P3 = P2 - 1)."""
    vals = []
    for off in ((0x5800, 0x5000, 0x4800) if int(bits) == 3 else (0x5400, 0x4C00, 0x4400)):  # fp16 64, 16, 4
        vals += [FP16_ONE * 0x10001, off * 0x10001, FP16_ONE * 0x10001, off * 0x10001]
    return [v - (1 << 32) if v >= 1 << 31 else v for v in vals]


@constexpr_function
def ring_regions(bits, stages, nthreads, xbytes):
    """Byte offsets in the kernel's one shared allocation: the code ring [stage][chunk][thread]
    16 bytes at 0 (3 bits: then the low-bit ring [stage][thread] 8 bytes, at :func:`low_ring`),
    the scale ring [stage][thread] 4 bytes, the activation block (xbytes); and the allocation's
    size in int32 words (a power of two, as Gluon's allocations must be)."""
    bits, stages, nthreads, xbytes = int(bits), int(stages), int(nthreads), int(xbytes)
    soff = low_ring(bits, stages, nthreads) + (stages * nthreads * 8 if bits == 3 else 0)
    xoff = soff + stages * nthreads * 4
    return soff, xoff, 1 << max(0, (xoff + xbytes - 1) // 4).bit_length()


@constexpr_function
def low_ring(bits, stages, nthreads):
    """3 bits: the byte offset of the low-bit ring (after the code ring)."""
    return int(stages) * (int(bits) // 2) * int(nthreads) * 16


@constexpr_function
def issue_asm(bits, stages, nthreads, slot):
    """Copy one group into slot ``slot`` of this thread's rings: $4 the code address, $8 the scale
    address (int64, element 0 of each lane's four), $12 whether the group is real (else no code is
    copied and the scale slot is zero-filled, so it adds s * 0 = 0; the group is still committed so
    that the wait counts stay exact), $16 / $17 / $18 the thread's ring bases (16 / 4 / 8 bytes a
    thread), 3 bits: $20 the address of the lane's two low-bit words. A lane's code chunks are 512
    bytes apart (word sets u = 0, 1 of the layout). $0-3 a dummy."""
    bits, stages, nthreads, slot = int(bits), int(stages), int(nthreads), int(slot)
    ch = bits // 2
    soff, _, _ = ring_regions(bits, stages, nthreads, 0)
    t = ["{", ".reg .u32 sz;", ".reg .pred v;", "setp.ne.s32 v, $12, 0;", "selp.u32 sz, 4, 0, v;"]
    for j in range(ch):
        t.append(f"@v cp.async.cg.shared.global [$16+{(slot * ch + j) * nthreads * 16}], [$4+{512 * j}], 16;")
    if bits == 3:
        t.append(f"@v cp.async.ca.shared.global [$18+{low_ring(bits, stages, nthreads) + slot * nthreads * 8}], "
                 "[$20], 8;")
    t.append(f"cp.async.ca.shared.global [$17+{soff + slot * nthreads * 4}], [$8], 4, sz;")
    t += ["cp.async.commit_group;", "mov.u32 $0, 0;", "mov.u32 $1, 0;", "mov.u32 $2, 0;", "mov.u32 $3, 0;", "}"]
    return "\n".join(t)


@constexpr_function
def sum_parts_asm(ku, tw):
    """$0-3 = the sum, in part order, of the ku 16-byte pieces at $4 + q * tw * 512 (the parts of
    one row tile's accumulators, lop3_kernel.sum_parts)."""
    ku, tw = int(ku), int(tw)
    lines = ["{", ".reg .f32 a<4>;", "ld.shared.v4.f32 {$0, $1, $2, $3}, [$4];"]
    for q in range(1, ku):
        lines.append(f"ld.shared.v4.f32 {{a0, a1, a2, a3}}, [$4+{q * tw * 512}];")
        lines += [f"add.f32 ${r}, ${r}, a{r};" for r in range(4)]
    lines.append("}")
    return "\n".join(lines)


@constexpr_function
def prefetch_asm():
    """Into L2, for the warp's row tile (element 0 of each lane's four): lane 0 the $8 bytes of
    codes at $4 by one bulk prefetch (none when $8 <= 0), then lane l the 32 scale bytes of groups
    l, l + 32, .. < $16 from $12, $20 bytes apart. Hints only: no register or shared memory is
    written, so the output is the same with or without. $0-3 zero; ``${:uid}`` labels the loop."""
    return ("{ .reg .pred p, q; .reg .u32 l, j; .reg .u64 a; mov.u32 l, %laneid; setp.eq.u32 p, l, 0; "
            "setp.gt.s32 q, $8, 0; and.pred p, p, q; @p cp.async.bulk.prefetch.L2.global [$4], $8; mov.u32 j, l; "
            "pf_${:uid}: setp.lt.s32 q, j, $16; @!q bra pfd_${:uid}; mad.wide.u32 a, j, $20, $12; "
            "prefetch.global.L2 [a]; add.u32 j, j, 32; bra pf_${:uid}; pfd_${:uid}: mov.u32 $0, 0; mov.u32 $1, 0; "
            "mov.u32 $2, 0; mov.u32 $3, 0; }")


@constexpr_function
def wait_count_asm():
    """Spin until the u32 at [$4] is at least $8 (acquire loads, GPU scope); $0-3 zero. ``${:uid}``
    gives each copy of the asm its own label."""
    return ("{ .reg .pred p; .reg .u32 v; wait_${:uid}: ld.acquire.gpu.global.u32 v, [$4]; "
            "setp.lt.u32 p, v, $8; @p bra wait_${:uid}; mov.u32 $0, 0; mov.u32 $1, 0; mov.u32 $2, 0; "
            "mov.u32 $3, 0; }")


@constexpr_function
def stamp_asm(ph):
    """The timeline's stamp of phase ``ph``: thread 0 stores %globaltimer (ns) and %clock64 (its
    SM's cycles) at byte 16 · ph of $1, an int64 [10] row (phase 0: also %smid at byte 64)."""
    ph = int(ph)
    sm = "mov.u32 s, %smid; cvt.u64.u32 g, s; @p st.global.v2.u64 [$1+64], {g, g}; " if ph == 0 else ""
    return ("{ .reg .u64 g, c; .reg .u32 s; .reg .pred p; mov.u32 s, %tid.x; setp.eq.u32 p, s, 0; "
            f"mov.u64 g, %globaltimer; mov.u64 c, %clock64; @p st.global.v2.u64 [$1+{16 * ph}], {{g, c}}; "
            f"{sm}mov.u32 $0, 0; }}")
