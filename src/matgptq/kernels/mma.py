"""Tensor-core kernel for decode batches (1 to 16 rows): one warp-level ``mma.sync.m16n8k16`` per
16 columns and 8 batch rows, on codes decoded in the registers they were loaded into (batches of
9 to 16 rows run a second mma on the same decoded fragments).

Lane 4g + c of a warp loads, for its two rows r0 and r0 + 2 of the row tile (mma rows g and
g + 8, rows permuted so that the lane's scales sit in one aligned 8-byte load), words
4c .. 4c+3 of every chunk (16 bytes per row and chunk, see :mod:`.pack`). After
:func:`.triton_decode.unit_word`, byte lane i of word t' holds the code of column
16*(8i+u) + 4c + t', so for one (i, u) the lane already holds its share of the A fragment of an
m16n8k16 step (columns 4c + {0,1} and {2,3} of both rows), and it loads batch row g's
activations at the same four columns as its B fragment. One byte permute turns two codes into
the fp16 pair (k*2^-24, k'*2^-24), exact subnormals (8-bit codes take a second permute); the mma
multiplies and accumulates in fp32, and a second mma with A = 1 gives each batch row's sum of x
for the zero point: sum w*x = s*(C1 * sum v*x - (C0 + z_b) * sum x) as in the other kernels,
here with v = k*2^-24. No shared memory, no layout conversion in the k-loop, the packed layout
every kernel reads; 1.9-2.6 instructions per weight against 4.2-5.1 for the CUDA-core kernel
(``benchmarks/kernel_sass.py --kernel mma``). Lanes of batch rows past M read row M - 1 rather
than masked zeros, so the activation loads are plain loads with the same addresses in every row
tile of a warp: with two or more row tiles per warp (bn / 16 > num_warps, k_unroll = 1) the
compiler loads them and runs the A = 1 mma once for all of them (1.6-2.4 instructions per
weight at bn=64, num_warps=2).

The PTX works on the lanes that hold the elements: every operand is a [tiles, 128] tensor read
contiguously along its 128 elements, so Triton gives lane l elements 4l..4l+3
(``tests/test_kernel_layout.py`` compiles for sm_90 and checks it). Under the Triton interpreter
(no inline PTX) the same fragments are multiplied with tl ops that follow the PTX fragment
layout, so the CPU tests check the data movement the GPU relies on.
"""

from __future__ import annotations

from .triton_decode import triton

LAM = float(1 << 24)  # code k = LAM * v for the fp16 subnormal v the permutes make

if triton is not None:
    import triton.language as tl

    from .triton_decode import finish_tile, issue_here, load_chunks, unit_word

    @triton.constexpr_function
    def _decode_lines(i, wide, words):
        """PTX of the eight A registers a0..a7 of byte lane i: register n pairs words $w, $w+1."""
        lines = []
        for n, w in enumerate(words):
            if wide:  # 8-bit codes: gather the two bytes, then interleave zero bytes
                lines.append(f"prmt.b32 t{n}, ${w}, ${w + 1}, {i | (4 + i) << 4};")
                lines.append(f"prmt.b32 a{n}, t{n}, 0, {0x4140};")
            else:  # codes < 128: the sign-replicated byte is the zero high byte
                lines.append(f"prmt.b32 a{n}, ${w}, ${w + 1}, {i | (8 | i) << 4 | (4 + i) << 8 | (12 + i) << 12};")
        return lines

    MMA = "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"
    WORDS = (4, 8, 6, 10, 12, 16, 14, 18)  # after four result registers: words of units u, u+1

    @triton.constexpr_function
    def _mma_asm(i, wide, first):
        """PTX of two m16n8k16 steps (units u, u+1; byte lane i): operands $0-3 the fp32 result,
        $4-7 / $8-11 row r / r+8 words of unit u, $12-15 / $16-19 those of unit u+1, $20-21 / $22-23
        the activations of units u / u+1 (four fp16 in two registers), $24-27 the accumulator
        (first: none, the steps start from zero)."""
        lines = ["{", ".reg .b32 a<8>, t<8>;", ".reg .f32 e<4>, z;", "mov.f32 z, 0f00000000;"]
        lines += _decode_lines(int(i), wide, WORDS)
        acc = "{z, z, z, z}" if first else "{$24, $25, $26, $27}"
        lines.append(f"{MMA} {{e0, e1, e2, e3}}, {{a0, a1, a2, a3}}, {{$20, $21}}, {acc};")
        lines.append(f"{MMA} {{$0, $1, $2, $3}}, {{a4, a5, a6, a7}}, {{$22, $23}}, {{e0, e1, e2, e3}};")
        lines.append("}")
        return "\n".join(lines)

    @triton.constexpr_function
    def _mma16_asm(i, wide, first):
        """:func:`_mma_asm` for sixteen batch rows: the same decoded A registers times batch rows
        0-7 ($20-23) and 8-15 ($24-27). Each of the four results $0-3 (and accumulators $28-31)
        is a 64-bit pair (rows 0-7, rows 8-15): one result tensor keeps Triton's operand layout."""
        lines = ["{", ".reg .b32 a<8>, t<8>;", ".reg .f32 e<8>, f<8>, c<8>, z;", "mov.f32 z, 0f00000000;"]
        lines += _decode_lines(int(i), wide, WORDS)
        if not first:
            lines += [f"mov.b64 {{c{n}, c{4 + n}}}, ${28 + n};" for n in range(4)]
        for h in range(2):
            acc = "{z, z, z, z}" if first else "{" + ", ".join(f"c{4 * h + n}" for n in range(4)) + "}"
            e = ", ".join(f"e{4 * h + n}" for n in range(4))
            f = ", ".join(f"f{4 * h + n}" for n in range(4))
            x = 20 + 4 * h
            lines.append(f"{MMA} {{{e}}}, {{a0, a1, a2, a3}}, {{${x}, ${x + 1}}}, {acc};")
            lines.append(f"{MMA} {{{f}}}, {{a4, a5, a6, a7}}, {{${x + 2}, ${x + 3}}}, {{{e}}};")
        lines += [f"mov.b64 ${n}, {{f{n}, f{4 + n}}};" for n in range(4)]
        lines.append("}")
        return "\n".join(lines)

    @triton.constexpr_function
    def _ones_asm(first):
        """PTX of two m16n8k16 steps with A = 1: the column sums of the activations."""
        mma = "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32"
        acc = "{z, z, z, z}" if first else "{$8, $9, $10, $11}"
        return "\n".join([
            "{", ".reg .b32 one;", ".reg .f32 e<4>, z;", "mov.b32 one, 0x3C003C00;", "mov.f32 z, 0f00000000;",
            f"{mma} {{e0, e1, e2, e3}}, {{one, one, one, one}}, {{$4, $5}}, {acc};",
            f"{mma} {{$0, $1, $2, $3}}, {{one, one, one, one}}, {{$6, $7}}, {{e0, e1, e2, e3}};", "}",
        ])

    @triton.jit
    def _ones(xa, xb, d1, FIRST: tl.constexpr):
        """Two m16n8k16 steps of A = 1 (the activation sums), added to d1 or from zero."""
        if FIRST:
            d1 = tl.inline_asm_elementwise(_ones_asm(True), "=f,=f,=f,=f,r,r,r,r", [xa, xb],
                                           dtype=tl.float32, is_pure=True, pack=4)
        else:
            d1 = tl.inline_asm_elementwise(_ones_asm(False), "=f,=f,=f,=f,r,r,r,r,f,f,f,f", [xa, xb, d1],
                                           dtype=tl.float32, is_pure=True, pack=4)
        return d1

    @triton.jit
    def _mma2(wa0, wa1, wb0, wb1, xa, xb, d, d1, I: tl.constexpr, WIDE: tl.constexpr, FIRST: tl.constexpr):
        """Two m16n8k16 steps (units u, u+1) of the codes and of A = 1, added to (d, d1), or
        from zero when FIRST (a scale group's first steps)."""
        if FIRST:
            d = tl.inline_asm_elementwise(_mma_asm(I, WIDE, True), "=f,=f,=f,=f" + ",r" * 20,
                                          [wa0, wa1, wb0, wb1, xa, xb], dtype=tl.float32, is_pure=True, pack=4)
        else:
            d = tl.inline_asm_elementwise(_mma_asm(I, WIDE, False), "=f,=f,=f,=f" + ",r" * 20 + ",f,f,f,f",
                                          [wa0, wa1, wb0, wb1, xa, xb, d], dtype=tl.float32, is_pure=True, pack=4)
        return d, _ones(xa, xb, d1, FIRST)

    @triton.jit
    def _mma2x2(wa0, wa1, wb0, wb1, xa, xb, xa2, xb2, dd, d1, d12,
                I: tl.constexpr, WIDE: tl.constexpr, FIRST: tl.constexpr):
        """:func:`_mma2` for sixteen batch rows: the same A fragments times batch rows 0-7
        (xa, xb) and 8-15 (xa2, xb2), decoded once; ``dd`` holds both code sums as 64-bit
        pairs (:func:`_halves` splits them), d1 / d12 the activation sums of each half."""
        if FIRST:
            dd = tl.inline_asm_elementwise(_mma16_asm(I, WIDE, True), "=l,=l,=l,=l" + ",r" * 24,
                                           [wa0, wa1, wb0, wb1, xa, xb, xa2, xb2], dtype=tl.int64,
                                           is_pure=True, pack=4)
        else:
            dd = tl.inline_asm_elementwise(_mma16_asm(I, WIDE, False), "=l,=l,=l,=l" + ",r" * 24 + ",l,l,l,l",
                                           [wa0, wa1, wb0, wb1, xa, xb, xa2, xb2, dd], dtype=tl.int64,
                                           is_pure=True, pack=4)
        return dd, _ones(xa, xb, d1, FIRST), _ones(xa2, xb2, d12, FIRST)

    @triton.jit
    def _halves(dd):
        """The two fp32 code sums (batch rows 0-7, rows 8-15) packed in each 64-bit element."""
        lo = dd.to(tl.int32).to(tl.float32, bitcast=True)
        hi = (dd >> 32).to(tl.int32).to(tl.float32, bitcast=True)
        return lo, hi

    @triton.jit
    def _in_d_layout(p0, p1, RT: tl.constexpr):
        """[RT, 8 rows, 8 batch] products of rows r and r+8 -> [RT, 128] in the layout of the mma
        result: element 16g + 4c + 2h + e (lane 4g + c, register 2h + e) is row g + 8h, batch 2c + e."""
        p = tl.join(tl.reshape(p0, [RT, 8, 4, 2]), tl.reshape(p1, [RT, 8, 4, 2]))  # [.., c, e, h]
        return tl.reshape(tl.permute(p, (0, 1, 2, 4, 3)), [RT, 128])

    @triton.jit
    def _step_ref(w0, w1, x, I: tl.constexpr, RT: tl.constexpr):
        """One m16n8k16 step with tl ops (the interpreter): codes of byte lane I of the row-r and
        row-(r+8) words times the activations, in the mma result's layout, times 2^-24."""
        xf = tl.reshape(x.to(tl.float32), [RT, 1, 8, 16])  # [., ., batch g, column 4c + j]
        k0 = tl.reshape(((w0 >> (8 * I)) & 0xFF).to(tl.float32), [RT, 8, 1, 16])
        k1 = tl.reshape(((w1 >> (8 * I)) & 0xFF).to(tl.float32), [RT, 8, 1, 16])
        p0 = tl.sum(k0 * xf, axis=3)
        p1 = tl.sum(k1 * xf, axis=3)
        return _in_d_layout(p0, p1, RT) * (1.0 / 16777216.0)

    @triton.jit
    def _ones_ref(x, RT: tl.constexpr):
        """The mma with A = 1: every row gets its batch column's sum of x."""
        xs = tl.sum(tl.reshape(x.to(tl.float32), [RT, 8, 16]), axis=2)  # [., batch]
        xs = tl.broadcast_to(tl.reshape(xs, [RT, 1, 4, 2]), [RT, 8, 4, 2])
        return _in_d_layout(xs, xs, RT)

    @triton.jit
    def _own_rows(v, odd, RT: tl.constexpr):
        """[RT, 128] values of rows 4(g//2) + j -> those of the lane's rows r0 (registers 0, 1) and
        r0 + 2 (registers 2, 3): a select inside each thread."""
        ev, od = tl.split(tl.reshape(v, [RT, 32, 2, 2]))  # [., lane, h]: rows 2h and 2h + 1
        own = tl.where(odd, od, ev)
        return tl.reshape(tl.join(own, own), [RT, 128])

    @triton.jit
    def _put(t, i: tl.constexpr, v):
        """The 4-tuple t with element i replaced by v."""
        if i == 0:
            r = (v, t[1], t[2], t[3])
        elif i == 1:
            r = (t[0], v, t[2], t[3])
        elif i == 2:
            r = (t[0], t[1], v, t[3])
        else:
            r = (t[0], t[1], t[2], v)
        return r

    @triton.jit
    def _k_step(i: tl.constexpr, u: tl.constexpr, ca, cb, ds, d1s, d2s, d12s, dds, acc, acc2, zero, zero64,
                kt, DK, E, live, K, N, NG, xk, xk2, S, Z, sofs, smask, spar, C1, C0, ZOFF, ZCONST,
                R: tl.constexpr, V: tl.constexpr, G: tl.constexpr, UG: tl.constexpr, B: tl.constexpr,
                NP: tl.constexpr, PW: tl.constexpr, PO: tl.constexpr, RND: tl.constexpr, SYM: tl.constexpr,
                EVEN: tl.constexpr, ROTM: tl.constexpr, ASM: tl.constexpr, HB: tl.constexpr, DIAG: tl.constexpr):
        """Step (byte lane i, units u and u+1) of a k-tile: decode the row r / r+8 words of both
        units (chunks ca / cb), run their mmas into byte lane i's sums (scale group i), and at a
        group's last step scale the sums into acc (acc2: batch rows 8..15)."""
        KT: tl.constexpr = 32 * V
        a0, a1, a2, a3, a4, a5, a6, a7 = ca
        b0, b1, b2, b3, b4, b5, b6, b7 = cb
        k0 = kt * KT + (8 * i + u) * V  # first column of unit u of the first k-tile (u+1: + 16)
        wa0 = unit_word(u, a0, a1, a2, a3, a4, a5, a6, a7, PW, PO, NP, RND, B, True, ROTM, ASM)
        wa1 = unit_word(u, b0, b1, b2, b3, b4, b5, b6, b7, PW, PO, NP, RND, B, True, ROTM, ASM)
        wb0 = unit_word(u + 1, a0, a1, a2, a3, a4, a5, a6, a7, PW, PO, NP, RND, B, True, ROTM, ASM)
        wb1 = unit_word(u + 1, b0, b1, b2, b3, b4, b5, b6, b7, PW, PO, NP, RND, B, True, ROTM, ASM)
        if u % UG == 0:  # a scale group's first steps: its sums start from zero
            ds = _put(ds, i, zero)
            d1s = _put(d1s, i, zero)
            d2s = _put(d2s, i, zero)
            d12s = _put(d12s, i, zero)
            dds = _put(dds, i, zero64)
        ku0 = (8 * i + u) * V  # first column of unit u inside the k-tile
        if EVEN:
            xa = tl.load(xk + ku0)
            xb = tl.load(xk + (ku0 + 16))
            if HB == 2:
                xa2 = tl.load(xk2 + ku0)
                xb2 = tl.load(xk2 + (ku0 + 16))
        else:
            kx = k0 + DK * KT + E % 16
            xa = tl.load(xk + ku0, mask=live & (kx < K), other=0.0)
            xb = tl.load(xk + (ku0 + 16), mask=live & (kx + 16 < K), other=0.0)
            if HB == 2:
                xa2 = tl.load(xk2 + ku0, mask=live & (kx < K), other=0.0)
                xb2 = tl.load(xk2 + (ku0 + 16), mask=live & (kx + 16 < K), other=0.0)
        if ASM:
            if HB == 2:
                dd, d1, d12 = _mma2x2(wa0, wa1, wb0, wb1, xa, xb, xa2, xb2, dds[i], d1s[i], d12s[i],
                                      i, B == 8, u % UG == 0)
                dds = _put(dds, i, dd)
                d12s = _put(d12s, i, d12)
            else:
                d, d1 = _mma2(wa0, wa1, wb0, wb1, xa, xb, ds[i], d1s[i], i, B == 8, u % UG == 0)
                ds = _put(ds, i, d)
            d1s = _put(d1s, i, d1)
        else:
            ds = _put(ds, i, ds[i] + _step_ref(wa0, wa1, xa, i, R) + _step_ref(wb0, wb1, xb, i, R))
            d1s = _put(d1s, i, d1s[i] + _ones_ref(xa, R) + _ones_ref(xb, R))
            if HB == 2:
                d2s = _put(d2s, i, d2s[i] + _step_ref(wa0, wa1, xa2, i, R) + _step_ref(wb0, wb1, xb2, i, R))
                d12s = _put(d12s, i, d12s[i] + _ones_ref(xa2, R) + _ones_ref(xb2, R))
        if (u + 2) % UG == 0:  # the group's last steps: scale its sums into the result
            if G == 0:
                g = DK * 0
            elif DIAG & 4:  # benchmarks/kernel_bounds.py: the first k-tile's groups
                g = DK * 0 + i
            else:
                g = tl.minimum((k0 + DK * KT + (2 - UG) * V) // G, NG - 1)
            s = _own_rows(tl.load(S + g * N + sofs, mask=smask & live, other=0.0), spar, R).to(tl.float32)
            if SYM:  # C1 waits to the end
                zs = (C0 + ZCONST - ZOFF) / C1
            else:
                zb = _own_rows(tl.load(Z + g * N + sofs, mask=smask & live, other=0), spar, R).to(tl.float32) - ZOFF
                zs = (C0 + zb) / C1
            if HB == 2 and ASM:
                d, d2 = _halves(dds[i])
            else:
                d = ds[i]
                d2 = d2s[i]
            acc += s * (d - zs * d1s[i])
            if HB == 2:
                acc2 += s * (d2 - zs * d12s[i])
        return ds, d1s, d2s, d12s, dds, acc, acc2

    @triton.jit(do_not_specialize=["M", "KTN", "NG", "TILES_PER_SPLIT", "SPLIT_K"])
    def mma_kernel(
        X, stride_xm, Q, S, Z, OUT, stride_om, BIAS, WS, CNT,
        M, N, K, KTN, NG, TILES_PER_SPLIT, SPLIT_K,
        C1, C0, ZOFF, ZCONST,
        RT: tl.constexpr, V: tl.constexpr, G: tl.constexpr, UG: tl.constexpr,
        B: tl.constexpr, NP: tl.constexpr, PW: tl.constexpr, PO: tl.constexpr, RND: tl.constexpr,
        NCH: tl.constexpr, CH: tl.constexpr, SYM: tl.constexpr,
        EVEN: tl.constexpr, HAS_BIAS: tl.constexpr, PRMT: tl.constexpr, RAW: tl.constexpr, ROTM: tl.constexpr,
        ASM: tl.constexpr, NS: tl.constexpr, KU: tl.constexpr = 1, HB: tl.constexpr = 1, UO: tl.constexpr = 0,
        DIAG: tl.constexpr = 0,
    ):
        """RT row tiles of 16 rows per program (RT / num_warps per warp) over a range of k-tiles
        (split-K), KU k-tiles loaded together (their loads all in flight before the first is
        decoded); batch rows 0..M-1 (M <= 8 * HB) are the eight columns of HB mmas that share the
        decoded codes (HB = 2: batch rows 8..15 are a second set of columns). NS: the codes of the
        next NS - 1 k-tile steps are loaded (into registers) before the current one is decoded.
        UO: the order of a k-tile's 16 steps (:func:`_k_step`), byte lanes outer (0) or units outer (1).
        DIAG (``benchmarks/kernel_bounds.py`` only; wrong results): the same instructions, but bit 0
        reads every iteration's activations, bit 1 its codes, bit 2 its scales and zeros from the
        first k-tiles (cache hits after the first), so a timing shows what the rest costs without
        that stream."""
        pid_n = tl.program_id(0)
        pid_k = tl.program_id(1)
        KT: tl.constexpr = 32 * V
        R: tl.constexpr = KU * RT
        # [operand row T, element e]: row T is row tile T % RT of k-tile kt + T // RT; lane e // 4
        # of the warp owning it holds e = 16g + 4c + j, its register j (lane 4g + c). Code words
        # and activations are read contiguously in e, so Triton gives every thread four
        # consecutive elements and lane l the elements 4l..4l+3.
        T = tl.arange(0, R)[:, None]
        DK = T // RT  # k-tile of the row, after the first of the KU
        E = tl.arange(0, 128)[None, :]
        Gl = E // 16
        C = (E // 4) % 4
        J = E % 4
        # mma row m of the tile is row 4(m//2 % 4) + m % 2 + 2(m // 8): lane 4g + c owns rows
        # r0 and r0 + 2, and its four aligned scales 4(g//2)..4(g//2)+3 hold both
        rt = pid_n * (16 * RT) + 16 * (T % RT)  # first row of the tile
        r0 = rt + 4 * (Gl // 2) + Gl % 2
        chunk_stride = N * V
        offs0 = DK * (CH * chunk_stride) + r0 * V + 4 * C + J  # words 4c..4c+3 of row r0 (16 bytes)
        offs1 = offs0 + 2 * V
        sofs = rt + 4 * (Gl // 2) + J  # [R, 128]: rows 4(g//2) + j, 8 aligned bytes per lane
        spar = (tl.arange(0, 32) // 4 % 2)[None, :, None] == 1  # lanes whose rows are odd
        # batch row g, column 4c + j of a k-tile. Lanes of batch rows g >= M read row M - 1 instead
        # of masked zeros (no predicated loads, no zeroing): their mma columns are never stored.
        xoffs = tl.minimum(Gl, M - 1) * stride_xm + 4 * C + J
        xoffs2 = tl.minimum(Gl + 8, M - 1) * stride_xm + 4 * C + J  # HB = 2: batch row 8 + g
        smask = sofs < N
        acc = tl.zeros([R, 128], dtype=tl.float32)
        zero = tl.zeros([R, 128], dtype=tl.float32)
        acc2 = zero
        zero64 = tl.zeros([R, 128], dtype=tl.int64)
        kt0 = pid_k * TILES_PER_SPLIT
        kt1 = tl.minimum(kt0 + TILES_PER_SPLIT, KTN)
        if NS >= 2:  # the first k-tiles' codes, before the loop
            base = Q + tl.cast(kt0, tl.int64) * (CH * chunk_stride)
            live = kt0 + DK < kt1  # k-tiles to read: none past the last
            p0, p1, p2, p3, p4, p5, p6, p7 = load_chunks(base + offs0, chunk_stride, (r0 < N) & live, NCH)
            q0, q1, q2, q3, q4, q5, q6, q7 = load_chunks(base + offs1, chunk_stride, (r0 + 2 < N) & live, NCH)
        if NS == 3:  # and the k-tiles after them
            base = Q + tl.cast(kt0 + KU, tl.int64) * (CH * chunk_stride)
            live = kt0 + KU + DK < kt1
            pp0, pp1, pp2, pp3, pp4, pp5, pp6, pp7 = load_chunks(base + offs0, chunk_stride, (r0 < N) & live, NCH)
            qq0, qq1, qq2, qq3, qq4, qq5, qq6, qq7 = load_chunks(base + offs1, chunk_stride, (r0 + 2 < N) & live, NCH)
        for kt in range(kt0, kt1, KU):
            live = kt + DK < kt1  # [R, 1]: the row's k-tile is in this program's range
            if NS >= 2:  # registers double- (triple-) buffered: the later k-tiles' loads are issued first
                a0, a1, a2, a3, a4, a5, a6, a7 = p0, p1, p2, p3, p4, p5, p6, p7
                b0, b1, b2, b3, b4, b5, b6, b7 = q0, q1, q2, q3, q4, q5, q6, q7
                if NS == 3:
                    p0, p1, p2, p3, p4, p5, p6, p7 = pp0, pp1, pp2, pp3, pp4, pp5, pp6, pp7
                    q0, q1, q2, q3, q4, q5, q6, q7 = qq0, qq1, qq2, qq3, qq4, qq5, qq6, qq7
                kn = kt + (NS - 1) * KU
                if DIAG & 2:
                    kn = kt0
                base = Q + tl.cast(kn, tl.int64) * (CH * chunk_stride)
                nxt = kt + (NS - 1) * KU + DK < kt1
                if NS == 3:
                    pp0, pp1, pp2, pp3, pp4, pp5, pp6, pp7 = load_chunks(base + offs0, chunk_stride, (r0 < N) & nxt, NCH)
                    qq0, qq1, qq2, qq3, qq4, qq5, qq6, qq7 = load_chunks(base + offs1, chunk_stride, (r0 + 2 < N) & nxt,
                                                                         NCH)
                else:
                    p0, p1, p2, p3, p4, p5, p6, p7 = load_chunks(base + offs0, chunk_stride, (r0 < N) & nxt, NCH)
                    q0, q1, q2, q3, q4, q5, q6, q7 = load_chunks(base + offs1, chunk_stride, (r0 + 2 < N) & nxt, NCH)
                if ASM:  # issued here: the compiler would sink them towards their use, the next iteration
                    kt = issue_here(kt)
            else:
                kn = kt
                if DIAG & 2:
                    kn = kt0
                base = Q + tl.cast(kn, tl.int64) * (CH * chunk_stride)
                a0, a1, a2, a3, a4, a5, a6, a7 = load_chunks(base + offs0, chunk_stride, (r0 < N) & live, NCH)
                b0, b1, b2, b3, b4, b5, b6, b7 = load_chunks(base + offs1, chunk_stride, (r0 + 2 < N) & live, NCH)
            # the activations of the row's k-tile; a row past the program's range (KU > 1) reads
            # this k-tile's instead: finite values, times zero codes and zero scales
            kx0 = kt
            if DIAG & 1:
                kx0 = kt0
            xkt = (kx0 + tl.where(live, DK, 0)) * KT
            xk = X + xoffs + xkt
            xk2 = X + xoffs2 + xkt
            # the 16 steps (byte lane i, unit pair u, u+1) of a k-tile. Byte lane i holds scale
            # group i (units 8i..8i+7), with its own sums. UO = 0: lanes outer (every unit's decoded
            # words stay live across the four lanes); UO = 1: units outer (they die after four steps)
            ds = (zero, zero, zero, zero)  # code sums per lane (HB = 2 on the GPU: dds, 64-bit pairs)
            d1s = (zero, zero, zero, zero)  # activation sums per lane
            d2s = (zero, zero, zero, zero)  # batch rows 8..15 (HB = 2)
            d12s = (zero, zero, zero, zero)
            dds = (zero64, zero64, zero64, zero64)
            ca = (a0, a1, a2, a3, a4, a5, a6, a7)
            cb = (b0, b1, b2, b3, b4, b5, b6, b7)
            if UO:
                for u in tl.static_range(0, 8, 2):
                    for i in tl.static_range(4):
                        ds, d1s, d2s, d12s, dds, acc, acc2 = _k_step(
                            i, u, ca, cb, ds, d1s, d2s, d12s, dds, acc, acc2, zero, zero64, kt, DK, E, live, K, N, NG,
                            xk, xk2, S, Z, sofs, smask, spar, C1, C0, ZOFF, ZCONST,
                            R, V, G, UG, B, NP, PW, PO, RND, SYM, EVEN, ROTM, ASM, HB, DIAG)
            else:
                for i in tl.static_range(4):
                    for u in tl.static_range(0, 8, 2):
                        ds, d1s, d2s, d12s, dds, acc, acc2 = _k_step(
                            i, u, ca, cb, ds, d1s, d2s, d12s, dds, acc, acc2, zero, zero64, kt, DK, E, live, K, N, NG,
                            xk, xk2, S, Z, sofs, smask, spar, C1, C0, ZOFF, ZCONST,
                            R, V, G, UG, B, NP, PW, PO, RND, SYM, EVEN, ROTM, ASM, HB, DIAG)
        if KU > 1:  # the KU k-tiles' partial sums of a row tile sit in the same thread
            acc = tl.sum(tl.reshape(acc, [KU, RT, 128]), axis=0)
            if HB == 2:
                acc2 = tl.sum(tl.reshape(acc2, [KU, RT, 128]), axis=0)
        T0 = tl.arange(0, RT)[:, None]
        orow = pid_n * (16 * RT) + 16 * T0 + 4 * (Gl // 2) + Gl % 2 + 2 * (J // 2)  # output row and batch row
        ocol = tl.broadcast_to(2 * C + J % 2, [RT, 128])  # batch row of each result register
        if HB == 2:  # both sets of batch rows, one store (and one split-K counter) per tile
            finish_tile(tl.join(acc, acc2) * C1, tl.join(ocol, ocol + 8), tl.join(orow, orow), M, N, OUT, stride_om,
                        BIAS, WS, CNT, pid_n, pid_k, SPLIT_K, HAS_BIAS)
        else:
            finish_tile(acc * C1, ocol, orow, M, N, OUT, stride_om, BIAS, WS, CNT, pid_n, pid_k, SPLIT_K, HAS_BIAS)
