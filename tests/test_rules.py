"""The breakpoint argmin equals the exhaustive search over all 2^M codes."""

from fractions import Fraction

import numpy as np
import pytest
import torch

from matgptq.quant import make_rule
from oracles import exhaustive_codes, value_table

CASES = [
    (8, (8, 4, 3), (1.0, 1.0, 1.0), "round"),
    (8, (8, 4, 3), (1.0, 1.0, 1.0), "nested"),
    (8, (8, 6, 4, 2), (0.5, 1.0, 2.0, 4.0), "round"),
    (8, (8, 3), (3.0, 0.25), "nested"),
    (8, (8,), (1.0,), "round"),
    (4, (4, 3, 2), (1.0, 1.0, 1.0), "round"),
    (4, (4, 2), (0.1, 7.0), "nested"),
    (4, (4,), (1.0,), "nested"),
]


@pytest.mark.parametrize("m,bits,lambdas,rule", CASES)
def test_breakpoints_match_exhaustive_search(m, bits, lambdas, rule):
    """10^6 random weights per case: w ~ N(0, σ) on a random grid (s, z), u = w/s + z."""
    g = torch.Generator().manual_seed(hash((m, bits, rule)) % 2**31)
    n = 1_000_000
    maxq = 2**m - 1
    w = torch.randn(n, generator=g, dtype=torch.float64) * 0.02
    s = 0.08 / maxq * (0.5 + torch.rand(n, generator=g, dtype=torch.float64))
    z = torch.randint(0, maxq + 1, (n,), generator=g).double()
    u = w / s + z  # includes values far outside [0, maxq]: clipping is part of the argmin
    r = make_rule(m, bits, lambdas, rule)
    expected = exhaustive_codes(u, m, bits, lambdas, rule)
    assert torch.equal(r.codes(u), expected)
    u32 = u.float()  # the float32 table is rounded for float32 inputs
    assert torch.equal(r.codes(u32), exhaustive_codes(u32.double(), m, bits, lambdas, rule))


@pytest.mark.parametrize("m,bits,lambdas,rule", [c for c in CASES if c[0] == 4])
def test_ties_go_to_the_smaller_code_exactly(m, bits, lambdas, rule):
    """At every breakpoint (and one ulp either side) the code is the exact rational argmin."""
    r = make_rule(m, bits, lambdas, rule)
    table = value_table(m, bits, rule)
    lam = [Fraction(x) for x in lambdas]

    def exact_argmin(u: float) -> int:
        uf = Fraction(u)
        costs = [sum(l * (uf - Fraction(float(table[i, q]))) ** 2 for i, l in enumerate(lam))
                 for q in range(2**m)]
        return min(range(2**m), key=lambda q: (costs[q], q))

    points = []
    for bp in r.breakpoints64.tolist():
        points += [bp, np.nextafter(bp, -np.inf), np.nextafter(bp, np.inf)]
    u = torch.tensor(points, dtype=torch.float64)
    assert r.codes(u).tolist() == [exact_argmin(p) for p in points]


def test_uniform_rule_is_rounding_with_ties_down():
    r = make_rule(8, (8,), (1.0,), "round")
    assert r.uniform
    u = torch.tensor([-3.0, 0.49, 0.5, 0.51, 1.5, 127.5, 254.5, 254.51, 300.0])
    assert r.codes(u).tolist() == [0, 0, 0, 1, 1, 127, 254, 255, 255]
    assert torch.equal(r.recon64, torch.arange(256, dtype=torch.float64))


def test_recon_tables():
    r = make_rule(8, (8, 4, 3), (1.0, 2.0, 3.0), "round")
    t = value_table(8, (8, 4, 3), "round")
    lam = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert torch.allclose(r.recon64, (lam[:, None] * t).sum(0) / 6)
    mean = make_rule(8, (8, 4, 3), (1.0, 2.0, 3.0), "round", "mean")
    assert torch.allclose(mean.recon64, t.mean(0))
    assert torch.equal(mean.breakpoints64, r.breakpoints64)  # the argmin does not change
