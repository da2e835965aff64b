"""Packed layouts: exact round trip to the sliced codes, bits touched per read, dequantization."""

import pytest
import torch

from matgptq.kernels.pack import (FIXED_PARTS, KTILE, dequantize_packed, pack, pack_parts, resident_parts,
                                  unpack_codes, unpack_parts)
from matgptq.quant.grid import dequantize, slice_codes


def _random(n, k, m, groups, seed, asym=True):
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 1 << m, (n, k), generator=g, dtype=torch.uint8)
    s = (torch.rand(n, groups, generator=g) * 0.02 + 1e-3).half()
    if asym:
        z = torch.randint(0, 1 << m, (n, groups), generator=g).to(torch.uint8)
    else:
        z = torch.full((n, groups), 1 << (m - 1), dtype=torch.uint8)
    return q, s, z


@pytest.mark.parametrize("m", [8, 6, 3, 2])
@pytest.mark.parametrize("rule", ["round", "nested"])
@pytest.mark.parametrize("shape,gs", [((40, 72), None), ((33, 1056), 32), ((8, 512), 128)])
def test_every_slice_round_trips_in_both_layouts(m, rule, shape, gs):
    n, k = shape
    q, s, z = _random(n, k, m, 1 if gs is None else k // gs, seed=m + n)
    for layout in ("resident", "fixed"):
        for b in range(1, m + 1):
            pw = pack(q, s, z, master_bits=m, slicing=rule, group_size=gs, layout=layout, bits=b)
            assert torch.equal(unpack_codes(pw, b), slice_codes(q.int(), m, b, rule)), (layout, b)
            ref = dequantize(q, s, z, m, b, rule, gs, torch.float64)
            assert torch.equal(dequantize_packed(pw, b, torch.float64), ref), (layout, b)


def test_resident_read_touches_b_bits_nested_and_b_plus_1_round():
    n, k = 64, 2048
    q, s, z = _random(n, k, 8, k // 128, seed=1, asym=False)
    codes_bytes = {}
    for rule in ("nested", "round"):
        pw = pack(q, s, z, master_bits=8, slicing=rule, group_size=128, layout="resident")
        assert pw.zeros is None  # symmetric: no zero points stored
        scale_bytes = s.numel() * 2
        for b in range(2, 9):
            codes_bytes[rule, b] = pw.bytes_read(b) - scale_bytes
            extra = 1 if (rule == "round" and b < 8) else 0
            assert codes_bytes[rule, b] * 8 == (b + extra) * n * k, (rule, b)
    for b in range(2, 9):
        fixed = pack(q, s, z, master_bits=8, slicing="round", group_size=128, layout="fixed", bits=b)
        assert (fixed.bytes_read(b) - s.numel() * 2) * 8 == b * n * k
        assert fixed.qweight.numel() * 32 == b * n * k  # dense: b bits per weight stored


def test_layout_widths_and_dense_parts():
    assert resident_parts(8) == (2, 1, 1, 1, 1, 1, 1)
    assert all(sum(p) == b for b, p in FIXED_PARTS.items())
    codes = torch.randint(0, 8, (5, 600), generator=torch.Generator().manual_seed(3))
    q = pack_parts(codes, (2, 1), row_block=2)  # several row blocks, K padded to a k-tile
    assert q.shape == (2, 3, 5, 16) and q.dtype == torch.int32
    assert torch.equal(unpack_parts(q, (2, 1), 5, 600), codes.int())
    assert torch.equal(unpack_parts(q, (2, 1), 5, 600, nparts=1), codes.int() >> 1)  # MSBs alone
    assert KTILE == 512


def test_fixed_layout_serves_only_its_width():
    q, s, z = _random(8, 64, 8, 1, seed=4)
    pw = pack(q, s, z, master_bits=8, slicing="round", group_size=None, layout="fixed", bits=4)
    with pytest.raises(ValueError, match="only the 4-bit slice"):
        pw.read_plan(3)
    with pytest.raises(ValueError, match="choose 1..8"):
        pack(q, s, z, master_bits=8, slicing="round", group_size=None, layout="resident").read_plan(9)


def _run_ptx(asm: str, args: list[int]) -> int:
    """Evaluate the straight-line PTX of the resident decode (and / or / mov / shf.r.wrap on b32
    registers) for one lane: $1.. are ``args``, returns $0."""
    regs = {f"${j + 1}": a & 0xFFFFFFFF for j, a in enumerate(args)}
    val = lambda s: regs[s] if s in regs else int(s, 0)  # noqa: E731
    for line in asm.splitlines():
        line = line.strip().rstrip(";")
        if not line or line in "{}" or line.startswith(".reg"):
            continue
        op, rest = line.split(None, 1)
        ops = [o.strip() for o in rest.split(",")]
        if op == "and.b32":
            regs[ops[0]] = val(ops[1]) & val(ops[2])
        elif op == "or.b32":
            regs[ops[0]] = val(ops[1]) | val(ops[2])
        elif op == "mov.b32":
            regs[ops[0]] = val(ops[1])
        elif op == "shf.r.wrap.b32":  # funnel shift right of (hi:lo) = ($2:$1); a rotation when equal
            assert ops[1] == ops[2], line
            w, r = val(ops[1]), val(ops[3]) % 32
            regs[ops[0]] = ((w >> r) | (w << (32 - r))) & 0xFFFFFFFF
        else:
            raise AssertionError(f"unexpected PTX {line!r}")
    return regs["$0"]


@pytest.mark.parametrize("m", [3, 8])
def test_resident_decode_ptx_gives_the_b_bit_codes(m):
    """The inline PTX the GPU kernels decode resident codes with (one and-or per part, one funnel
    shift) yields, for every width b and unit u, byte lane i = the b-bit code of column
    16*(8i + u) + t: checked by evaluating the PTX on the packed words (the interpreter cannot
    run inline PTX)."""
    triton_decode = pytest.importorskip("matgptq.kernels.triton_decode")
    if triton_decode.triton is None:
        pytest.skip("no triton")
    from matgptq.kernels.pack import resident_rotations

    g = torch.Generator().manual_seed(m)
    codes = torch.randint(0, 1 << m, (2, KTILE), generator=g)
    parts = resident_parts(m)
    q = pack_parts(codes, parts, rotations=resident_rotations(m), strided=True)  # [1, CH, 2, V]
    for b in range(2, m + 1):
        nparts = b - 1  # the 2-bit part and b - 2 one-bit parts: chunks 0, 1 and 2 .. b - 1
        for u in range(8):
            asm = triton_decode._resident_asm(u, parts[0], nparts, m, b)
            for row in range(2):
                for t in range(16):
                    chunks = [int(q[0, u % 2, row, t])] + [int(q[0, 1 + j, row, t]) for j in range(1, nparts)]
                    word = _run_ptx(asm, chunks)
                    want = [int(codes[row, 16 * (8 * i + u) + t]) >> (m - b) for i in range(4)]
                    assert [(word >> (8 * i)) & 0xFF for i in range(4)] == want, (b, u, row, t)
