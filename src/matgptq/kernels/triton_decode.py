"""Triton helpers shared by the kernels: load a k-tile's chunks, turn parts into codes, finish
a split-K tile. The layout is described in :mod:`.pack`.

Codes become floats without an int->float conversion: a b-bit code k placed in the top of an
fp32 mantissa, or-ed with the bits of 1.0, *is* the float v = 1 + k/2^b. With
w = s*(k*2^d - z_b) this gives  sum_k w*x = s*(2^M * sum v*x - (2^M + z_b) * sum x)  per group,
so the inner loop is one shift, one and-or and one FMA per weight.
"""

from __future__ import annotations

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - machines without triton
    triton = None


def lane_consts(bits: int, use_prmt: bool) -> tuple[float, float]:
    """(LAM, MU) with code k = LAM * (v - MU) for the float v that :func:`lane_value` makes."""
    return (256.0, 0.5) if use_prmt else (float(1 << bits), 1.0)


if triton is not None:

    @triton.jit
    def load_chunks(ptrs, chunk_stride, mask, NCH: tl.constexpr):
        """The first NCH chunks of a k-tile (NCH <= 8) as uint32 tiles; unused slots alias c0."""
        c0 = tl.load(ptrs, mask=mask, other=0, eviction_policy="evict_first").to(tl.uint32, bitcast=True)
        c1 = c0
        c2 = c0
        c3 = c0
        c4 = c0
        c5 = c0
        c6 = c0
        c7 = c0
        if NCH > 1:
            c1 = tl.load(ptrs + chunk_stride, mask=mask, other=0, eviction_policy="evict_first").to(tl.uint32, bitcast=True)
        if NCH > 2:
            c2 = tl.load(ptrs + 2 * chunk_stride, mask=mask, other=0, eviction_policy="evict_first").to(tl.uint32, bitcast=True)
        if NCH > 3:
            c3 = tl.load(ptrs + 3 * chunk_stride, mask=mask, other=0, eviction_policy="evict_first").to(tl.uint32, bitcast=True)
        if NCH > 4:
            c4 = tl.load(ptrs + 4 * chunk_stride, mask=mask, other=0, eviction_policy="evict_first").to(tl.uint32, bitcast=True)
        if NCH > 5:
            c5 = tl.load(ptrs + 5 * chunk_stride, mask=mask, other=0, eviction_policy="evict_first").to(tl.uint32, bitcast=True)
        if NCH > 6:
            c6 = tl.load(ptrs + 6 * chunk_stride, mask=mask, other=0, eviction_policy="evict_first").to(tl.uint32, bitcast=True)
        if NCH > 7:
            c7 = tl.load(ptrs + 7 * chunk_stride, mask=mask, other=0, eviction_policy="evict_first").to(tl.uint32, bitcast=True)
        return c0, c1, c2, c3, c4, c5, c6, c7

    @triton.jit
    def issue_here(token):
        """A warp-level barrier (one NOP on sm_90, it waits for nothing) that memory accesses
        cannot cross: the loads above it are issued before the code below, e.g. the next
        k-tile's codes ahead of this one's decoding, instead of where the compiler would sink
        them to (``tests/test_kernel_layout.py`` checks the SASS). ``token``: any scalar,
        returned unchanged (GPU only: inline PTX)."""
        return tl.inline_asm_elementwise("bar.warp.sync -1; mov.b32 $0, $1;", "=r,r", [token], dtype=tl.int32,
                                         is_pure=False, pack=1)

    @triton.jit
    def _pick(j: tl.constexpr, c0, c1, c2, c3, c4, c5, c6, c7):
        if j == 0:
            r = c0
        elif j == 1:
            r = c1
        elif j == 2:
            r = c2
        elif j == 3:
            r = c3
        elif j == 4:
            r = c4
        elif j == 5:
            r = c5
        elif j == 6:
            r = c6
        else:
            r = c7
        return r

    @triton.jit
    def _part_bits(w, r: tl.constexpr, o: tl.constexpr, P: tl.constexpr):
        """Unit bits at r (and every 8th bit above, P wide) moved to code offset o of each byte lane."""
        if r >= o:
            t = (w >> (r - o)) & ((((1 << P) - 1) * 0x01010101) << o)
        else:
            t = (w << (o - r)) & ((((1 << P) - 1) * 0x01010101) << o)
        return t

    @triton.constexpr_function
    def _rotl_const(x, r):
        """A 32-bit mask rotated left by r (compile time)."""
        x = int(x) & 0xFFFFFFFF
        r = int(r) % 32
        return ((x << r) | (x >> (32 - r))) & 0xFFFFFFFF if r else x

    @triton.constexpr_function
    def _resident_mask(u, j, p0, rotm):
        """Where unit u's bits of resident part j sit in its stored (strided, rotated) chunk: the
        first part (p0 bits wide) in chunk u % p0 at field u // p0, rotated left by rotm - p0 + u % p0;
        1-bit part j >= 1 at bit u, rotated left by rotm - 2 - j (:func:`..pack.resident_rotations`)."""
        u, j, p0, rotm = int(u), int(j), int(p0), int(rotm)
        if j == 0:
            return _rotl_const((((1 << p0) - 1) * 0x01010101) << (p0 * (u // p0)), rotm - p0 + u % p0)
        return _rotl_const(0x01010101 << u, rotm - 2 - j)

    @triton.constexpr_function
    def _resident_asm(u, p0, nparts, rotm, b):
        """PTX of unit u's b-bit codes from the resident parts $1..$nparts (see :func:`unit_word`)."""
        u, nparts, rotm, b = int(u), int(nparts), int(rotm), int(b)
        lines = ["{", ".reg .b32 t, x;", f"and.b32 t, $1, {_resident_mask(u, 0, p0, rotm):#x};"]
        for j in range(1, nparts):
            lines += [f"and.b32 x, ${j + 1}, {_resident_mask(u, j, p0, rotm):#x};", "or.b32 t, t, x;"]
        r = (u + rotm - b) % 32
        lines += [f"shf.r.wrap.b32 $0, t, t, {r};" if r else "mov.b32 $0, t;", "}"]
        return "\n".join(lines)

    @triton.jit
    def _add_round_bit(word, rb, B: tl.constexpr):
        """Byte-lane codes plus their round-half-up bits (rb, 0 or 1 per lane), 2^B saturated to 2^B - 1."""
        word = word + rb  # lanes hold <= 2^B <= 128: no carry between lanes
        return word - ((word >> B) & 0x01010101)

    @triton.jit
    def _rotr(w, r: tl.constexpr, HW: tl.constexpr = False):
        """w rotated right by r. HW (a GPU): one funnel shift in inline PTX. Written with shifts,
        the compiler splits the rotation of an or of masked parts by the bits each part can
        hold and spends an and-or more per word."""
        if r % 32 == 0:
            t = w
        elif HW:
            t = tl.inline_asm_elementwise(f"shf.r.wrap.b32 $0, $1, $1, {r % 32};", "=r,r", [w], dtype=tl.uint32,
                                          is_pure=True, pack=1)
        else:
            t = (w >> (r % 32)) | (w << (32 - r % 32))
        return t

    @triton.jit
    def unit_word(u: tl.constexpr, c0, c1, c2, c3, c4, c5, c6, c7,
                  PW: tl.constexpr, PO: tl.constexpr, NP: tl.constexpr, RND: tl.constexpr, B: tl.constexpr,
                  BYTES: tl.constexpr, ROTM: tl.constexpr = 0, HW: tl.constexpr = False):
        """The word holding unit u's codes. With one part, no rounding bit and not BYTES it is
        the raw chunk (fields at 8*i + P*(u % (8/P))); otherwise byte lane i holds the b-bit
        code k at bit 8*i and nothing else.

        PW / PO: width / first chunk of part j in bits 4j..4j+3; RND: the chunk after the parts
        holds the round-half-up bit. ROTM > 0: the resident layout of M = ROTM master bits, whose
        parts are strided and stored rotated (:func:`..pack.resident_rotations`): each is masked
        once, and one rotation places them all (always byte-lane codes). HW: on a GPU (inline PTX)."""
        if ROTM > 0:
            P0: tl.constexpr = PW & 15  # the first part's width (2; 1 when M = 1)
            if HW:  # one and-or per part and one funnel shift, in this order (the compiler would reorder)
                parts = (_pick(u % P0, c0, c1, c2, c3, c4, c5, c6, c7),)
                for j in tl.static_range(1, NP):
                    parts = parts + (_pick((PO >> (4 * j)) & 15, c0, c1, c2, c3, c4, c5, c6, c7),)
                word = tl.inline_asm_elementwise(_resident_asm(u, P0, NP, ROTM, B), "=r" + ",r" * NP, parts,
                                                 dtype=tl.uint32, is_pure=True, pack=1)
            else:
                t = _pick(u % P0, c0, c1, c2, c3, c4, c5, c6, c7) & _resident_mask(u, 0, P0, ROTM)
                for j in tl.static_range(1, NP):
                    t = t | (_pick((PO >> (4 * j)) & 15, c0, c1, c2, c3, c4, c5, c6, c7) & _resident_mask(u, j, P0, ROTM))
                word = _rotr(t, u + ROTM - B)
            if RND:
                rb = _rotr(_pick((PO >> (4 * NP)) & 15, c0, c1, c2, c3, c4, c5, c6, c7), u + ROTM - 2 - NP, HW) & 0x01010101
                word = _add_round_bit(word, rb, B)
        elif NP == 1 and RND == 0:
            P = PW & 15
            word = _pick(u // (8 // P), c0, c1, c2, c3, c4, c5, c6, c7)
            if BYTES:
                word = (word >> ((u % (8 // P)) * P)) & (((1 << P) - 1) * 0x01010101)
        else:
            P0 = PW & 15
            word = _part_bits(_pick(u // (8 // P0), c0, c1, c2, c3, c4, c5, c6, c7),
                              (u % (8 // P0)) * P0, B - P0, P0)
            for j in tl.static_range(1, NP):
                P = (PW >> (4 * j)) & 15
                OFF = (PO >> (4 * j)) & 15
                word = word | _part_bits(_pick(OFF + u // (8 // P), c0, c1, c2, c3, c4, c5, c6, c7),
                                         (u % (8 // P)) * P, B - OFF - P, P)
            if RND:
                rb = (_pick((PO >> (4 * NP)) & 15, c0, c1, c2, c3, c4, c5, c6, c7) >> u) & 0x01010101
                word = _add_round_bit(word, rb, B)
        return word

    @triton.constexpr_function
    def _prmt_asm(a, b, sel):
        """PTX of one byte permute: a, b are register operands ($1) or constants, sel a constant."""
        return f"prmt.b32 $0, {a}, {b}, {int(sel)};"

    @triton.jit
    def _prmt_lane(word, i: tl.constexpr):
        """One byte-permute: bytes [0x3F, lane i, 0, 0] = the float 0.5 + k/256 (k < 128)."""
        return tl.inline_asm_elementwise(_prmt_asm(0x3F000000, "$1", 0x3400 + 256 * i), "=r,r", [word],
                                         dtype=tl.uint32, is_pure=True, pack=1)

    @triton.jit
    def half2_pair(word, p: tl.constexpr):
        """fp16 pairs (1024 + k of byte lane 2p, 1024 + k of byte lane 2p+1): [..., 2]. Bytes
        [lane 2p, 0x64, lane 2p+1, 0x64] of (word, 0x64646464)."""
        return tl.inline_asm_elementwise(_prmt_asm("$1", 0x64646464, 0x4140 + 0x202 * p), "=r,r,r",
                                         [tl.join(word, word)], dtype=tl.float16, is_pure=True, pack=2)

    @triton.jit
    def lane_value(word, i: tl.constexpr, u: tl.constexpr, RAW: tl.constexpr, P: tl.constexpr, B: tl.constexpr,
                   PRMT: tl.constexpr):
        """The float v for lane i of unit u's word, k = LAM*(v - MU) (see :func:`lane_consts`):
        v = 1 + k/2^B from a shift and an and-or, or with PRMT (byte lanes, B <= 7) v = 0.5 + k/256
        from one byte permute."""
        if PRMT:
            t = _prmt_lane(word, i)
        else:
            if RAW:
                pos = 8 * i + P * (u % (8 // P))
            else:
                pos = 8 * i
            sh = 23 - B - pos
            if sh >= 0:
                t = word << sh
            else:
                t = word >> (-sh)
            t = (t & (((1 << B) - 1) << (23 - B))) | 0x3F800000
        return t.to(tl.float32, bitcast=True)

    @triton.jit
    def finish_tile(acc, mm, nn, M, N, OUT, stride_om, BIAS, WS, CNT, tile_id, pid_k, SPLIT_K,
                    HAS_BIAS: tl.constexpr):
        """Store an fp32 tile whose element e is output (batch row mm[e], column nn[e]); mm and nn
        broadcast to acc's shape and name every element once. With SPLIT_K > 1 every program
        writes its partial to the workspace and the last program of the tile (per-tile counter)
        sums the partials in a fixed order, adds the bias and writes the output: one launch,
        deterministic, and the counter is reset for the next call."""
        mask = (mm < M) & (nn < N)
        if SPLIT_K == 1:  # a run-time branch: one compiled kernel serves every split
            if HAS_BIAS:
                acc += tl.load(BIAS + nn, mask=nn < N, other=0.0).to(tl.float32)
            tl.store(OUT + mm * stride_om + nn, acc.to(OUT.dtype.element_ty), mask=mask)
        else:
            ws = WS + mm * N + nn
            tl.store(ws + pid_k * M * N, acc, mask=mask)
            tl.debug_barrier()
            old = tl.atomic_add(CNT + tile_id, 1, sem="acq_rel", scope="gpu")
            if old == SPLIT_K - 1:
                tot = tl.zeros_like(acc)
                for s in range(SPLIT_K):
                    tot += tl.load(ws + s * M * N, mask=mask, other=0.0, cache_modifier=".cg")
                if HAS_BIAS:
                    tot += tl.load(BIAS + nn, mask=nn < N, other=0.0).to(tl.float32)
                tl.store(OUT + mm * stride_om + nn, tot.to(OUT.dtype.element_ty), mask=mask)
                tl.atomic_xchg(CNT + tile_id, 0, sem="relaxed", scope="gpu")
