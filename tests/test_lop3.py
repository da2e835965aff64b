"""The lop3 layout: packing against a slow per-element reference, the decode PTX against its
definition (a small interpreter of the instructions it uses), the Triton tile reader, dequantize
and tensor-core kernels under TRITON_INTERPRET=1 and QuantLinear against float64, the launches'
shared-memory fit. The Gluon matmul kernel runs only on a GPU (test_lop3_kernel_on_gpu, with
TRITON_INTERPRET=0, and benchmarks/lop3.py's checks)."""

import os
from dataclasses import replace

os.environ.setdefault("TRITON_INTERPRET", "1")

import re

import pytest
import torch
import torch.nn.functional as F

from matgptq.kernels import lop3_asm
from matgptq.kernels.lop3_pack import P2, P3, SH2, SH4, low_bit_shift, pack_lop3, step_offsets, unpack_lop3
from matgptq.kernels.pack import dequantize_packed, pack
from matgptq.quant.grid import dequantize


try:
    import triton
    import triton.language as tl

    from matgptq.kernels.lop3_dequant import block_codes, pair_codes, pair_tile, word_order_cols

    @triton.jit
    def tile(Q, OUT, COLS, N, NG, BITS: tl.constexpr, PAIRS: tl.constexpr):
        """Every group's word-order tile of rows 0..31 (from block_codes, or with PAIRS from
        pair_codes as the tensor-core kernel reads them), and the tile's columns."""
        rows = tl.arange(0, 32)
        for G in range(NG):
            if PAIRS:
                c = pair_tile(pair_codes(Q, tl.arange(0, 16), N, G, NG, BITS), BITS, 32)
            else:
                c = tl.reshape(block_codes(Q, rows, N, G, NG, BITS), (32, 128))
            tl.store(OUT + G * 32 * 128 + rows[:, None] * 128 + tl.arange(0, 128)[None, :], c)
        tl.store(COLS + tl.arange(0, 128), word_order_cols(BITS))
except ImportError:  # pragma: no cover - machines without triton
    triton = None


def _codes(n, k, bits, seed=0):
    return torch.randint(0, 1 << bits, (n, k), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _fields_of(row, col, k, bits):
    """Where the layout keeps code (row, col), straight from its definition (lop3_pack's doc): a
    list of (word index, bit, width, the code's bit the field starts at); one field, or at 3 bits
    the top two bits in the 2-bit layout's word and the low bit at 16h + 2j + r0 of word
    128 + 2L + r1 of the block."""
    lb = 2 if bits == 3 else bits
    nf = 16 // lb
    t, rr = divmod(row, 16)
    g, r0 = divmod(rr, 2)
    G, cc = divmod(col, 128)
    c, w32 = divmod(cc, 32)
    step, rest = divmod(w32, 4)
    r1, h = divmod(rest, 2)
    u, f = divmod(step, nf)
    block = (t * (k // 128) + G) * 64 * bits
    top = (block + 128 * u + 4 * (4 * g + c) + 2 * r1 + r0, 16 * h + lb * f, lb, bits - lb)
    if bits != 3:
        return [top]
    return [top, (block + 128 + 2 * (4 * g + c) + r1, 16 * h + 2 * step + r0, 1, 0)]


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_pack_puts_every_code_where_the_layout_says(bits):
    n, k = 32, 256
    codes = _codes(n, k, bits, seed=bits)
    words = pack_lop3(codes, bits).to(torch.int64) & 0xFFFFFFFF
    assert words.numel() == n * k * bits // 32
    seen = torch.zeros(words.numel(), 32, dtype=torch.bool)
    for row in range(n):
        for col in range(k):
            code = int(codes[row, col])
            for i, bit, width, at in _fields_of(row, col, k, bits):
                assert (int(words[i]) >> bit) & ((1 << width) - 1) == (code >> at) & ((1 << width) - 1), (row, col)
                assert not seen[i, bit:bit + width].any()
                seen[i, bit:bit + width] = True
    assert seen.all()  # every bit of every word holds exactly one code
    assert torch.equal(unpack_lop3(pack_lop3(codes, bits), n, k, bits), codes.to(torch.int32))


def _run_ptx(text, regs):
    """The decode's instructions (shl / shr / lop3 0xEA = (a & b) | c) on 32-bit ints."""
    val = dict(regs)
    get = lambda a: val[a] if a in val else int(a, 0)  # noqa: E731
    for line in text.splitlines():
        m = re.match(r"(shl\.b32|shr\.u32|lop3\.b32) (\w+), ([$\w]+), (\w+)(?:, (\w+), (0x\w+))?;", line.strip())
        if not m:
            continue
        op, dst, a, b, c, lut = m.groups()
        if op == "shl.b32":
            val[dst] = (get(a) << int(b)) & 0xFFFFFFFF
        elif op == "shr.u32":
            val[dst] = get(a) >> int(b)
        else:
            assert lut == "0xEA"
            val[dst] = (get(a) & get(b)) | get(c)
    return val


def _fp16_pair(w):
    return [torch.tensor([v], dtype=torch.int16).view(torch.float16).item()
            for v in ((w & 0xFFFF) - (1 << 16 if w & 0x8000 else 0), (w >> 16) - (1 << 16 if w >> 31 else 0))]


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_decode_ptx_makes_offset_plus_code_in_every_fragment_slot(bits):
    """For every step j and lane, the A registers the PTX builds are the fp16 values
    2^(10-p_j) + code of the fragment's (row, column): rows g, g+8 <-> tile rows 2g, 2g+1; the
    columns of step j's register pair r1 at 32c + 4j + 2r1 + h. 3 bits: the lane's two low-bit
    words in $8, $9."""
    k = 128
    codes = _codes(16, k, bits, seed=7)
    words = pack_lop3(codes, bits).to(torch.int64) & 0xFFFFFFFF
    offs = step_offsets(bits)
    assert len(P2) == len(SH2) == len(P3) == 8 and len(SH4) == 4
    assert all(-8 <= low_bit_shift(j, r0) <= 3 for j in range(8) for r0 in (0, 1))  # no bit crosses a half
    for j0 in (0, 2, 4, 6):
        text = lop3_asm.code_asm(bits, j0, True)
        for lane in (0, 5, 18, 31):
            g, c = divmod(lane, 4)
            for jj in range(2):
                j = j0 + jj
                u = j // (16 // (2 if bits == 3 else bits))
                regs = {f"${4 + r}": int(words[128 * u + 4 * lane + r]) for r in range(4)}
                if bits == 3:
                    regs |= {f"${8 + i}": int(words[128 + 2 * lane + i]) for i in range(2)}
                val = _run_ptx(text, regs)
                for r in range(4):  # a-register r: row 2g + r0, columns + 2 r1 (r = 2 r1 + r0)
                    r1, r0 = divmod(r, 2)
                    lo, hi = _fp16_pair(val[f"a{4 * jj + r}"])
                    col = 32 * c + 4 * j + 2 * r1
                    assert lo == offs[j] + int(codes[2 * g + r0, col]), (j, lane, r)
                    assert hi == offs[j] + int(codes[2 * g + r0, col + 1]), (j, lane, r)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_offset_quads_hold_one_and_the_step_offsets(bits):
    """The quads q64, q16, q4 the kernel picks per step (lop3_kernel.quad: by P2's 4, 6, 8) hold 1
    and that step's offset."""
    pairs = [_fp16_pair(v & 0xFFFFFFFF) for v in lop3_asm.offset_quads(bits)]
    offs = step_offsets(bits)
    for j in range(8):
        quad = {4: 0, 6: 1, 8: 2}[P2[j]] if bits != 4 else 0
        assert [p[0] for p in pairs[4 * quad:4 * quad + 4]] == [1.0, offs[j], 1.0, offs[j]]
        assert all(p[0] == p[1] for p in pairs)
    assert set(step_offsets(2)) == {64.0, 16.0, 4.0} and set(step_offsets(4)) == {64.0}
    assert set(step_offsets(3)) == {128.0, 32.0, 8.0}


def test_end_asm_embeds_the_zero_exactly():
    text = lop3_asm.end_asm(7.53125, True)
    assert "0f40F10000" in text  # 7.53125 as fp32 bits
    assert text.count("fma.rn.f32") == 4 and "mov.f32 $1, $15;" in text  # batch 1: odd elements kept


def _run_f32_warp(text, regs):
    """The group ends' PTX (lop3_asm.end_asm, block_t_asm, end_block_asm, sum_parts_asm) over a
    warp: ``regs`` a list of 32 lane dicts ($k -> float32, fp16 pair or address); fp32 math in
    numpy (fma rounded once from float64), shfl.sync.idx across the lanes, ld.shared from a dict
    of address -> four floats under the key "smem"."""
    import numpy as np

    f32 = np.float32
    lanes = [dict(r) for r in regs]

    def get(v, a):
        if a.startswith("0f"):
            return np.frombuffer(int(a[2:], 16).to_bytes(4, "little"), dtype=np.float32)[0]
        return v[a]

    for line in (x.strip() for x in text.replace("{ ", "\n").replace("; ", ";\n").splitlines()):
        if not line or line.startswith((".reg", "{", "}")):
            continue
        op, rest = line.rstrip(";").split(" ", 1)
        if op == "shfl.sync.idx.b32":
            d, a, src, _, _ = (t.strip() for t in rest.split(","))
            vals = [v[a] for v in lanes]
            for v in lanes:
                v[d] = vals[int(src)]
            continue
        for v in lanes:
            if op == "mov.b32" and rest.startswith("{"):  # unpack an fp16 pair
                h0, h1, src = (t.strip(" {}") for t in rest.replace("}", ",").split(",") if t.strip(" {}"))
                v[h0], v[h1] = v[src]
            elif op == "ld.shared.v4.f32":
                dst, addr = rest.split("[")
                base, _, off = addr.rstrip("]").partition("+")
                for name, val in zip((t.strip(" {},") for t in dst.split(",") if t.strip(" {},")),
                                     v["smem"][v[base] + int(off or 0)]):
                    v[name] = f32(val)
            else:
                d, *a = (t.strip() for t in rest.split(","))
                x = [get(v, t) for t in a]
                if op == "fma.rn.f32":
                    v[d] = f32(np.float64(x[0]) * np.float64(x[1]) + np.float64(x[2]))
                elif op == "sub.f32":
                    v[d] = f32(x[0] - x[1])
                elif op == "add.f32":
                    v[d] = f32(x[0] + x[1])
                elif op in ("mov.f32", "mov.b32", "cvt.f32.f16"):
                    v[d] = f32(x[0])
                else:
                    raise AssertionError(f"no rule for {line!r}")
    return lanes


def test_block_offsets_end_as_the_per_group_end():
    """Batch 1 (OB): after the block's offset mma (lane 4g + c holds sum x and the offset sum of
    groups 2c, 2c + 1), block_t_asm then end_block_asm(n) give every lane exactly what end_asm gives
    with group n's own sums (the per-group offset mma, all of whose columns are batch row 0)."""
    import numpy as np

    rng = np.random.default_rng(3)
    zc = 7.53125
    sx, sox = rng.normal(size=8).astype(np.float32) * 30, rng.normal(size=8).astype(np.float32) * 900
    base = []
    for lane in range(32):
        c = lane % 4
        v = {f"${4 + e}": np.float32(rng.normal() * 1000) for e in range(4)}  # d
        v["$12"] = tuple(np.float32(np.float16(rng.uniform(1e-3, 2e-2))) for _ in range(2))  # scale pair
        v |= {f"${14 + e}": np.float32(rng.normal()) for e in range(4)}  # acc
        v["blk"] = [sx[2 * c], sx[2 * c + 1], sox[2 * c], sox[2 * c + 1]]
        base.append(v)
    t = _run_f32_warp(lop3_asm.block_t_asm(zc), [{f"${4 + e}": v["blk"][e] for e in range(4)} for v in base])
    for n in range(8):
        got = _run_f32_warp(lop3_asm.end_block_asm(n), [v | {f"${8 + e}": t[i][f"${e}"] for e in range(4)}
                                                        for i, v in enumerate(base)])
        want = _run_f32_warp(lop3_asm.end_asm(zc, True), [v | {"$8": sx[n], "$9": sx[n], "$10": sox[n],
                                                               "$11": sox[n]} for v in base])
        for lane in range(32):
            assert [got[lane][f"${e}"] for e in range(4)] == [want[lane][f"${e}"] for e in range(4)], (n, lane)


@pytest.mark.parametrize("ku,tw", [(2, 1), (4, 2), (8, 1)])
def test_sum_parts_adds_a_tiles_parts_in_order(ku, tw):
    """k parts: thread slot [part][tile][lane] of 16 bytes; a lane of tile w reading from its part-0
    slot gets the parts' sum, added in part order (left to right in fp32)."""
    import numpy as np

    rng = np.random.default_rng(ku)
    smem = {16 * i: rng.normal(size=4).astype(np.float32) for i in range(ku * tw * 32)}
    lanes = [{"$4": 16 * (w * 32 + lane), "smem": smem} for w in range(tw) for lane in range(32)]
    got = _run_f32_warp(lop3_asm.sum_parts_asm(ku, tw), lanes)
    for i, v in enumerate(got):
        want = smem[16 * i].copy()
        for q in range(1, ku):
            want = want + smem[16 * (i + q * tw * 32)]
        assert [v[f"${e}"] for e in range(4)] == list(want), i


def _lop3_case(n, k, bits, rule, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 256, (n, k), generator=g, dtype=torch.uint8)
    s = (torch.rand(n, k // 128, generator=g) * 0.02 + 1e-3).half()
    z = torch.full((n, k // 128), 128, dtype=torch.uint8)
    pw = pack(q, s, z, master_bits=8, slicing=rule, group_size=128, layout="lop3", bits=bits)
    return pw, dequantize(q, s, z, 8, bits, rule, 128, torch.float64)


@pytest.mark.parametrize("rule", ["round", "nested"])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_dequantize_matches_float64(rule, bits):
    pytest.importorskip("triton")
    from matgptq.kernels.dispatch import dequantize_triton

    pw, ref = _lop3_case(48, 256, bits, rule, seed=bits)
    assert torch.equal(dequantize_packed(pw, bits, torch.float64), ref)
    out = torch.full((48, 256), float("nan"), dtype=torch.float16)
    dequantize_triton(pw, bits, torch.float16, out)  # 48 rows: one program of 64, masked
    assert torch.isfinite(out).all(), "an element was left unwritten"
    assert torch.equal(out, ref.half())


@pytest.mark.parametrize("m", [1, 3, 9, 33])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_quant_matmul_on_the_lop3_layout(m, bits):
    """Under the interpreter the lop3 layout is served by its tensor-core kernel (the dispatcher's
    choice, split-K with a short last range, a row tile past N) and by dequantize + cuBLAS, fp16
    and bf16, with bias; NaN-poisoned outputs against float64, within the output's rounding."""
    pytest.importorskip("triton")
    from matgptq.kernels.configs import KernelConfig
    from matgptq.kernels.dispatch import choose_config, run_config

    pw, w = _lop3_case(48, 384, bits, "nested", seed=m + bits)
    g = torch.Generator().manual_seed(m)
    for dt, tol in ((torch.float16, 1e-3), (torch.bfloat16, 8e-3)):
        x = torch.randn(m, 384, generator=g).to(dt)
        bias = torch.randn(48, generator=g).to(dt)
        chosen = choose_config(x, pw, bits, bias)
        assert chosen.kind == "gemm"
        for cfg in (chosen, KernelConfig("gemm", bm=16, bn=32, split_k=2), KernelConfig("cublas")):
            out = torch.full((m, 48), float("nan"), dtype=dt)
            run_config(cfg, x, pw, bits, out, bias)
            ref = x.double() @ w.t() + bias.double()
            assert torch.isfinite(out).all(), f"{cfg.key()} left an element unwritten"
            assert ((out.double() - ref).norm() / ref.norm()).item() < tol, cfg.key()


def test_word_order_puts_every_code_at_its_column():
    """The Triton tile orders (lop3_dequant.block_words / pair_words, word_codes, pair_tile,
    word_order_cols) against the layout's definition: position p of row r's tile holds code
    (r, word_order_cols[p])."""
    if triton is None:
        pytest.skip("needs triton")
    for bits in (2, 3, 4):
        codes = _codes(32, 256, bits, seed=bits)
        for pairs in (False, True):
            out = torch.zeros(2, 32, 128, dtype=torch.int32)
            cols = torch.zeros(128, dtype=torch.int32)
            tile[(1,)](pack_lop3(codes, bits), out, cols, 32, 2, BITS=bits, PAIRS=pairs)
            assert sorted(cols.tolist()) == list(range(128))
            for G in range(2):
                assert torch.equal(out[G], codes[:, G * 128 + cols.long()].int()), (bits, pairs, G)


def test_quant_linear_lop3_matches_fixed_and_keeps_its_width():
    from matgptq.modules import QuantLinear
    from matgptq.quant import HessianAccumulator, QuantConfig, quantize_layer

    g = torch.Generator().manual_seed(3)
    acc = HessianAccumulator(256)
    acc.add(torch.randn(512, 256, generator=g))
    qw = quantize_layer(torch.randn(48, 256, generator=g) * 0.05, acc,
                        QuantConfig(method="matgptq", bits=(8, 4, 3, 2), group_size=128))
    x = torch.randn(5, 256, generator=g)
    for b in (2, 3, 4):
        ql = QuantLinear.from_quantized(qw, bits=b, layout="lop3", dtype=torch.float32)
        ref = F.linear(x.double(), qw.dequantize(b).double())
        assert torch.allclose(ql(x).double(), ref, rtol=1e-5, atol=1e-6)
        assert torch.equal(ql.dequantized_weight(), QuantLinear.from_quantized(qw, bits=b, layout="fixed",
                                                                             dtype=torch.float32).dequantized_weight())
        with pytest.raises(ValueError, match="layout='resident'"):
            ql.set_bits(8)


@pytest.mark.parametrize("kwargs,match", [
    (dict(bits=5), "pass bits=2, 3 or 4"),
    (dict(bits=4, group_size=64), "groups of 128"),
    (dict(bits=4, asym=True), "symmetric"),
    (dict(bits=4, n=40), "multiple of 16"),
])
def test_lop3_refuses_what_it_cannot_hold(kwargs, match):
    n, k, gs = kwargs.get("n", 32), 256, kwargs.get("group_size", 128)
    g = torch.Generator().manual_seed(0)
    q = torch.randint(0, 256, (n, k), generator=g, dtype=torch.uint8)
    s = torch.rand(n, k // gs, generator=g).half() + 0.01
    z = (torch.randint(0, 256, (n, k // gs), generator=g) if kwargs.get("asym")
         else torch.full((n, k // gs), 128)).to(torch.uint8)
    with pytest.raises(ValueError, match=match) as e:
        pack(q, s, z, master_bits=8, slicing="round", group_size=gs, layout="lop3", bits=kwargs["bits"])
    assert "layout='fixed'" in str(e.value)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the Gluon kernel needs a GPU")
@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("m", [1, 2, 3, 5, 7, 8, 9, 16, 20])
def test_lop3_kernel_on_gpu(m, bits):
    from matgptq.kernels.configs import KernelConfig
    from matgptq.kernels.dispatch import run_config

    from matgptq.kernels import lop3_kernel

    k = 2304  # 18 groups: blocks of eight with a short last one (batch 1's OB path)
    pw, w = _lop3_case(512, k, bits, "nested", seed=m)
    pw = pw.with_buffers(pw.qweight.cuda(), pw.scales.cuda(), None)
    x = torch.randn(m, k, device="cuda").half()
    from matgptq.kernels.configs import _lop3_split_ok

    for cfg in (KernelConfig("lop3", split_k=1, num_warps=4, num_stages=4),
                KernelConfig("lop3", bm=8, split_k=4, num_warps=2, num_stages=2),
                KernelConfig("lop3", split_k=2, num_warps=1, num_stages=3),
                KernelConfig("lop3", split_k=3, num_warps=2, num_stages=8),
                # k parts: 4 warps a tile (parts of 5 groups, the last one short), 2 a tile at split 2,
                # 4 a tile at split 3 with a 3-stage ring (parts of 2 groups)
                KernelConfig("lop3", bn=16, split_k=1, num_warps=4, num_stages=4, k_unroll=4),
                KernelConfig("lop3", bn=64, split_k=2, num_warps=8, num_stages=4, k_unroll=2),
                KernelConfig("lop3", bm=8, bn=16, split_k=3, num_warps=4, num_stages=3, k_unroll=4),
                # a split per group: the split-K sum's eight loads at a time, three times over
                KernelConfig("lop3", split_k=18, num_warps=2, num_stages=2)):
        if not _lop3_split_ok(512, k // 128, min(m, cfg.bm), bits, cfg.num_warps, cfg.num_stages, cfg.split_k,
                              cfg.k_unroll):
            continue  # its activations do not fit next to the rings (the tuner never offers it)
        out = torch.full((m, 512), float("nan"), device="cuda", dtype=torch.float16)
        run_config(cfg, x, pw, bits, out, None)
        ref = x.double().cpu() @ w.t()
        assert torch.isfinite(out).all()
        assert ((out.double().cpu() - ref).norm() / ref.norm()).item() < 1e-3
        # the same bits with programmatic dependent launch (the weights' first groups copied before
        # the wait, the next launch let start at the start or after the loop) and / or the L2
        # prefetch of the rest of each warp's groups, twice in a row
        for pdl, pf in ((1, 0), (2, 0), (0, 1), (1, 1), (2, 1)):
            other = torch.full_like(out, float("nan"))
            run_config(replace(cfg, pdl=pdl, l2_prefetch=pf), x, pw, bits, other, None)
            run_config(replace(cfg, pdl=pdl, l2_prefetch=pf), x, pw, bits, other, None)
            assert torch.equal(out, other), (pdl, pf)
        # and with each switch of the kernel flipped: the offset mma per group (batch 1), the split-K
        # sum by the last to arrive
        for switch in ("BLOCK_OFFSETS", "LAST_SPLIT_SUMS"):
            if switch == "BLOCK_OFFSETS" and not lop3_kernel.block_offsets(m, cfg.num_stages):
                continue
            was = getattr(lop3_kernel, switch)
            setattr(lop3_kernel, switch, not was)
            try:
                other = torch.full_like(out, float("nan"))
                run_config(cfg, x, pw, bits, other, None)
            finally:
                setattr(lop3_kernel, switch, was)
            assert torch.equal(out, other), switch
        # the timeline variant: the same output, and every program's four stamps in order
        from matgptq.kernels.dispatch import launch_lop3
        from matgptq.kernels.lop3_kernel import timeline_programs

        tl = torch.zeros(timeline_programs(512, k, cfg.num_warps, cfg.split_k, cfg.k_unroll), 10, dtype=torch.int64, device="cuda")
        out2 = torch.full_like(out, float("nan"))
        launch_lop3(x, pw, bits, out2, None, cfg, tl)
        assert torch.equal(out, out2)
        g = tl[:, 0:8:2].cpu()
        assert (g[:, 0] > 0).all() and (g[:, 1:] >= g[:, :-1]).all()


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("n,k", [(4096, 14336), (16384, 16384), (512, 2048)])
@pytest.mark.parametrize("m", [1, 8, 16, 20, 32, 33])
def test_lop3_launches_fit_their_shared_memory(n, k, m, bits):
    """Every lop3 launch the heuristic or the tuner picks holds its rings and the activations of
    one launch's rows (bm) in LOP3_SHARED and whole row tiles; past LOP3_MAX_M rows, or where the
    Gluon kernel cannot serve the call, only the tensor-core kernel and cuBLAS are offered."""
    from matgptq.kernels import configs
    from matgptq.kernels.lop3_kernel import shared_bytes

    groups = k // 128
    for kernel in (True, False):
        cands = configs.lop3_candidates(n, groups, m, 132, bits, kernel)
        chosen = configs.lop3_heuristic(n, groups, m, 132, bits, kernel)
        for cfg in cands + [chosen]:
            if cfg.kind != "lop3":
                continue
            assert kernel and m <= configs.LOP3_MAX_M, cfg.key()
            gps = -(-groups // cfg.split_k)
            assert shared_bytes(bits, cfg.num_warps, cfg.num_stages, gps, min(m, cfg.bm),
                                cfg.k_unroll) <= configs.LOP3_SHARED
            assert n % cfg.bn == 0 and cfg.bn == 16 * cfg.num_warps // cfg.k_unroll
        kinds = {c.kind for c in cands}
        if kernel and m <= configs.LOP3_MAX_M:
            assert chosen.kind == "lop3" and "lop3" in kinds
        else:
            assert chosen.kind in ("gemm", "cublas") and kinds <= {"gemm", "cublas"}


OFFLINE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from lop3 import compile_lop3

out = []
for bits, m, tl, st, ku, sw, pf in ((2, 1, False, 4, 1, 1, 0), (3, 1, False, 3, 1, 1, 0), (3, 9, False, 4, 1, 1, 0),
                                    (4, 16, False, 4, 1, 1, 0), (2, 1, True, 4, 1, 1, 0), (3, 1, False, 4, 4, 1, 0),
                                    (4, 9, False, 4, 2, 1, 0), (2, 1, False, 4, 1, 0, 0), (2, 1, False, 4, 1, 2, 0),
                                    (2, 1, False, 4, 1, 0, 1), (2, 1, False, 4, 1, 2, 1), (3, 1, False, 4, 4, 1, 1)):
    comp = compile_lop3(bits, m, timeline=tl, stages=st, k_parts=ku, last=bool(sw), pdl=sw, pf=pf)
    ptx, sass = comp.asm["ptx"], comp.asm["sass"]
    wait = ptx.find("griddepcontrol.wait")
    bulk = ptx.find("cp.async.bulk.prefetch.L2")
    out.append(dict(bits=bits, m=m, tl=tl, stages=st, ku=ku, sw=sw, pf=pf, bulk=ptx.count("cp.async.bulk.prefetch.L2"),
                    l2pf=ptx.count("prefetch.global.L2"), sass_bulk=sass.count("UBLKPF"),
                    sass_bulk_first=0 <= sass.find("UBLKPF") < (sass.find("ACQBULK") if "ACQBULK" in sass else len(sass)),
                    pf_between=0 <= ptx.find("cp.async.cg.shared.global") < bulk < (wait if wait >= 0 else len(ptx)),
                    atom=ptx.count("atom.global"),
                    mma=ptx.count("mma.sync"), cp_async=ptx.count("cp.async.cg.shared.global"),
                    timer=ptx.count("%globaltimer"), shfl=ptx.count("shfl.sync"), parts=ptx.count("st.shared.v4.f32"),
                    acquire=ptx.count("ld.acquire.gpu"), griddep=ptx.count("griddepcontrol."),
                    copies_first=0 <= ptx.find("cp.async.cg.shared.global") < wait,
                    dependents_last=0 <= ptx.rfind("mma.sync") < ptx.find("griddepcontrol.launch_dependents")))
print(json.dumps(out))
"""


def test_lop3_kernel_compiles_for_sm90():
    """Offline (no GPU), with the installed Triton (benchmarks/lop3.py's compile_lop3): the Gluon
    kernel compiles for sm_90 with its shared window at offset 0 (check_window), counts its split-K programs with atomics, and its
    group loop holds the mmas its PTX builders emit: unrolled over the ring stages, per group 8
    code and 8 offset mmas, repeated for the rows 8-15 of a launch of more than 8 rows; at batch 1
    with a ring of 2, 4 or 8 stages (OB) unrolled over a block of eight groups, 8 code mmas a
    group, one offset mma for the block and a shuffle a group. The timeline variant (TL) adds its
    four timer reads and nothing else; LAST_SPLIT_SUMS and PDL their acquire spin and their two
    griddepcontrol (the wait after the first weight copies; PDL 2 lets the next launch start after
    the group loop), and nothing else."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("triton.experimental.gluon")
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, TRITON_INTERPRET="0", PYTHONPATH=str(root / "src"))
    res = subprocess.run([sys.executable, "-c", OFFLINE, str(root / "benchmarks")], capture_output=True, text=True,
                         env=env, timeout=600)
    if res.returncode != 0 and "ptxas" in res.stderr and "not found" in res.stderr:
        pytest.skip("this Triton has no bundled ptxas")
    assert res.returncode == 0, res.stderr[-3000:]
    from matgptq.kernels.lop3_kernel import block_offsets

    got = {(r["bits"], r["m"], r["tl"], r["ku"], r["sw"], r["pf"]): r
           for r in json.loads(res.stdout.strip().splitlines()[-1])}
    for (bits, m, tl, ku, sw, pf), r in got.items():
        assert r["atom"] > 0 and r["cp_async"] > 0, r
        # the L2 prefetch: one bulk prefetch and one scale prefetch loop, after the ring's first copies
        # and (PDL) before the wait, only when asked for
        assert r["bulk"] == r["l2pf"] == pf and r["pf_between"] == bool(pf), r
        # and ptxas keeps it: one UBLKPF in the SASS, before ACQBULK (griddepcontrol.wait)
        assert r["sass_bulk"] == pf and r["sass_bulk_first"] == bool(pf), r
        # the last split's wait for the count (LAST_SPLIT_SUMS), the two griddepcontrol (PDL), only when
        # on; the first weight copies before the wait; PDL 2 lets the next launch start after the loop
        assert r["acquire"] == bool(sw) and r["griddep"] == 2 * bool(sw) and r["copies_first"] == bool(sw), r
        assert r["dependents_last"] == (sw == 2), r
        assert r["parts"] == (0 if ku == 1 else 2 if m > 8 else 1), r  # the k parts' sums: one store a batch half
        if block_offsets(m, r["stages"]):
            assert r["mma"] == 8 * 8 + 8 and r["shfl"] == 8, r  # 8 groups, 8 code mmas each, 8 for the block
        else:  # the unrolled groups, 16 mmas each (and the batch half)
            assert r["mma"] == r["stages"] * 16 * (2 if m > 8 else 1) and r["shfl"] == 0, r
        assert r["timer"] == (4 if tl else 0), r  # the timeline's four phase stamps, only when asked for
    assert {k: v for k, v in got[(2, 1, True, 1, 1, 0)].items() if k not in ("tl", "timer")} == \
        {k: v for k, v in got[(2, 1, False, 1, 1, 0)].items() if k not in ("tl", "timer")}
    switched = ("sw", "acquire", "griddep", "atom", "copies_first", "dependents_last")
    for sw in (1, 2):
        assert {k: v for k, v in got[(2, 1, False, 1, 0, 0)].items() if k not in switched} == \
            {k: v for k, v in got[(2, 1, False, 1, sw, 0)].items() if k not in switched}
    prefetched = ("pf", "bulk", "l2pf", "pf_between", "sass_bulk", "sass_bulk_first")
    for key in ((2, 1, False, 1, 0), (2, 1, False, 1, 2), (3, 1, False, 4, 1)):
        assert {k: v for k, v in got[key + (0,)].items() if k not in prefetched} == \
            {k: v for k, v in got[key + (1,)].items() if k not in prefetched}
    assert block_offsets(1, 4) and not block_offsets(1, 3) and not block_offsets(2, 4)


def test_timeline_phases():
    """benchmarks/lop3_timeline.py's summary of a launch's stamps, against the numbers by hand:
    three programs on two SMs, timer in ns, clock64 in cycles (offset per SM, as SM clocks are)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "lop3_timeline.py"
    spec = importlib.util.spec_from_file_location("lop3_timeline", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    starts, pro, loop, fin, sms = (1000, 1500, 3000), (500, 600, 700), (4000, 5000, 6000), (100, 200, 900), (3, 3, 7)
    rows = []
    for s, a, b, c, sm in zip(starts, pro, loop, fin, sms):
        g = [s, s + a, s + a + b, s + a + b + c]
        rows.append([v for t in g for v in (t, 2 * t + 10 ** 6 * sm)] + [sm, sm])
    got = mod.phases(torch.tensor(rows))
    assert got["programs"] == 3 and got["sms_used"] == 2 and got["programs_per_sm_max"] == 2
    assert got["span_us"] == (3000 + 700 + 6000 + 900 - 1000) / 1e3
    assert got["start_late_us_median"] == 0.5 and got["start_late_us_max"] == 2.0
    assert got["tail_us"] == ((3000 + 700 + 6000 + 900) - (3000 + 700 + 6000)) / 1e3
    assert (got["prologue_us_median"], got["loop_us_median"], got["finish_us_median"]) == (0.6, 5.0, 0.2)
    assert (got["prologue_us_p90"], got["loop_us_p90"], got["finish_us_p90"]) == (0.7, 6.0, 0.9)
    assert (got["prologue_cycles_median"], got["loop_cycles_median"], got["finish_cycles_median"]) == (1200, 10000, 400)


def test_benchmark_summary_lines(capsys):
    """benchmarks/lop3.py --summarize: the A1 miss line's needed time (the point's time scaled to
    the target share) and the PDL round's ratios, against the numbers by hand."""
    import importlib.util
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(bench))
    try:
        spec = importlib.util.spec_from_file_location("lop3_bench", bench / "lop3.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path.remove(str(bench))
    tried = {"lop3:bm16:bn64:sk8:w4:s4": 10.0, "lop3:bm16:bn64:sk7:w4:s4": 10.5, "lop3:bm16:bn64:sk8:w4:s4:p1": 11.0,
             "lop3:bm16:bn64:sk7:w4:s4:p2": 9.0, "lop3:bm16:bn64:sk8:w4:s4:pf1": 9.5,
             "lop3:bm16:bn64:sk8:w4:s4:p2:pf1": 8.6, "lop3:bm16:bn64:sk7:w4:s4:p2:pf1": 9.2,
             "gemm:bm16:bn64:sk1:w4:s1": 8.0}
    row = dict(shape="4096x14336", bits=2, batch=1, us=9.0, config="lop3:bm16:bn64:sk7:w4:s4:p2", fixed_us=12.0,
               speedup_vs_fixed=12.0 / 9.0, fp16_us=45.0, deq_cublas_us=None, lop3_dequant_us=None, pct_copy=60.0,
               tried=tried)
    mod.summarize([row, dict(row, bits=4, pct_copy=81.0, tried={})])
    out = capsys.readouterr().out
    assert "A1 misses (the time the target needs, from the run's bytes and copy bandwidth): " \
           "['4096x14336 b2 9.00 us, 8.31 at 65 %']" in out  # 9.00 * 60 / 65 = 8.307...; 4 bits passes
    assert "PDL (p1, p2) and the L2 prefetch (pf), best launch with each over best with neither: " \
           "4096x14336 b2 m1 p1 1.100x p2 0.900x pf 0.950x p2+pf 0.860x\n" in out
