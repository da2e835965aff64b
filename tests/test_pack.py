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
