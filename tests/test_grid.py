"""The integer grid and both slicing rules against METHOD §1 written out per element."""

import itertools

import pytest
import torch

from matgptq.quant import code_values, dequantize, group_params, slice_codes, sliced_zero
from oracles import params_reference, slice_value


@pytest.mark.parametrize("rule", ["round", "nested"])
@pytest.mark.parametrize("m", [2, 3, 4, 6, 8])
def test_slice_codes_and_values_match_the_formula(m, rule):
    q = torch.arange(2**m, dtype=torch.uint8)
    for b in range(1, m + 1):
        d = m - b
        k = slice_codes(q, m, b, rule).long()
        assert int(k.max()) <= 2**b - 1 and int(k.min()) >= 0
        expected = torch.tensor([slice_value(int(x), m, b, rule) for x in q], dtype=torch.float64)
        assert torch.equal(code_values(m, b, rule), expected)
        # the kernel form: s * (k * 2^d - z_b) equals s * (T_b(q) - z)
        z = torch.tensor([2.0 ** (m - 1)], dtype=torch.float64)
        assert torch.allclose(k * 2.0**d - sliced_zero(z, m, b, rule), expected - z)


def test_nested_grid_is_symmetric_and_exactly_truncation():
    q = torch.arange(256)
    for b in range(1, 9):
        vals = code_values(8, b, "nested")
        levels = torch.unique(vals)
        assert len(levels) == 2**b
        assert torch.allclose(levels + levels.flip(0), torch.full_like(levels, 255.0))
        assert torch.equal(slice_codes(q, 8, b, "nested"), q >> (8 - b))


@pytest.mark.parametrize("sym", [True, False])
@pytest.mark.parametrize("m", [2, 4, 8])
def test_group_params_include_zero_and_never_clip(sym, m):
    g = torch.Generator().manual_seed(m)
    w = torch.randn(64, 32, generator=g, dtype=torch.float64)
    w[0] = w[0].abs() + 0.5  # all positive
    w[1] = -w[1].abs() - 0.5  # all negative
    w[2] = 0.0  # all zero
    s, z = group_params(w, m, sym, torch.float64)
    s_ref, z_ref = params_reference(w, m, sym, torch.float64)
    assert torch.allclose(s, s_ref) and torch.equal(z, z_ref)
    assert ((z >= 0) & (z <= 2**m - 1)).all()
    # zero is representable up to half a step and the range covers every weight up to half a step
    lo = s * (0 - z)
    hi = s * (2**m - 1 - z)
    assert (w.min(1).values >= lo - s / 2 - 1e-12).all()
    assert (w.max(1).values <= hi + s / 2 + 1e-12).all()


def test_group_params_round_scale_to_storage_dtype():
    w = torch.randn(16, 128) * 0.013
    s, _ = group_params(w, 8, True, torch.float16)
    assert torch.equal(s, s.half().float())


def test_dequantize_groups_and_widths():
    g = torch.Generator().manual_seed(0)
    q = torch.randint(0, 256, (6, 64), generator=g, dtype=torch.uint8)
    s = torch.rand(6, 4, generator=g) + 0.1
    z = torch.randint(0, 256, (6, 4), generator=g).float()
    for b, rule in itertools.product(range(2, 9), ["round", "nested"]):
        w = dequantize(q, s, z, 8, b, rule, 16, torch.float64)
        for r, c in [(0, 0), (5, 63), (3, 17), (2, 40)]:
            expect = s[r, c // 16].double() * (slice_value(int(q[r, c]), 8, b, rule) - z[r, c // 16].double())
            assert torch.isclose(w[r, c], expect)


def test_slice_rejects_bad_widths():
    q = torch.zeros(3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="choose bits in 1..4"):
        slice_codes(q, 4, 5, "round")
    with pytest.raises(ValueError, match="unknown slicing rule"):
        slice_codes(q, 4, 2, "floor")
