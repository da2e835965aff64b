"""Column rules: how one column of (error-compensated) weights becomes master codes.

Every rule is two lookup tables over master codes, in master-code units u = w/s + z:
- ``breakpoints`` (2^M - 1 values, non-decreasing): q*(u) = #{j : breakpoints[j] < u}, which is
  one ``searchsorted``; ties go to the smaller code;
- ``recon`` (2^M values): the reconstruction whose residual the GPTQ update feeds forward,
  ŵ = s * (recon[q] - z).

GPTQ at width M is the special case B = {M}: breakpoints q + 1/2, recon q. MatGPTQ (METHOD §3)
minimises Σ_b λ_b (u - T_b(q))^2; since every code's objective is Λu² plus a line in u, q*(u) is
the lower envelope of 2^M lines, whose crossings are computed once, exactly, in rationals.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch

from .config import QuantConfig
from .grid import code_values


@dataclass(frozen=True)
class ColumnRule:
    master_bits: int
    bits: tuple[int, ...]
    lambdas: tuple[float, ...]
    slicing: str
    compensation: str
    breakpoints64: torch.Tensor  # rounded toward -inf in float64
    breakpoints32: torch.Tensor  # rounded toward -inf in float32
    recon64: torch.Tensor

    @property
    def uniform(self) -> bool:
        """True when q*(u) is plain rounding (ties down) to 0..2^M-1: the fast path in kernels."""
        return self.bits == (self.master_bits,)

    def breakpoints(self, dtype: torch.dtype, device=None) -> torch.Tensor:
        bp = self.breakpoints64 if dtype == torch.float64 else self.breakpoints32
        return bp.to(device=device, dtype=dtype if dtype == torch.float64 else torch.float32)

    def recon(self, dtype: torch.dtype, device=None) -> torch.Tensor:
        return self.recon64.to(device=device, dtype=dtype)

    def codes(self, u: torch.Tensor) -> torch.Tensor:
        """q*(u) for master-code-unit inputs of any shape (int64)."""
        return torch.searchsorted(self.breakpoints(u.dtype, u.device), u.contiguous())


def rule_for(config: QuantConfig) -> ColumnRule:
    return make_rule(
        config.master_bits, config.bits, config.lambdas, config.slicing, config.compensation
    )


@functools.lru_cache(maxsize=64)
def make_rule(
    master_bits: int,
    bits: tuple[int, ...],
    lambdas: tuple[float, ...],
    slicing: str,
    compensation: str = "weighted",
) -> ColumnRule:
    n = 1 << master_bits
    # T_b(q) are multiples of 1/2 and λ are binary fractions: every quantity below is exact.
    targets = [
        [Fraction(v) for v in code_values(master_bits, b, slicing).tolist()]
        for b in bits
    ]
    lam = [Fraction(x) for x in lambdas]
    slope = [sum(lam[i] * targets[i][q] for i in range(len(bits))) for q in range(n)]  # A_q
    icept = [sum(lam[i] * targets[i][q] ** 2 for i in range(len(bits))) for q in range(n)]  # C_q
    exact = _envelope_breakpoints(slope, icept)

    bp64 = torch.tensor([_round_down(x, np.float64) for x in exact], dtype=torch.float64)
    bp32 = torch.tensor([_round_down(x, np.float32) for x in exact], dtype=torch.float32)
    if compensation == "weighted":
        total = sum(lam)
        recon = [float(a / total) for a in slope]
    else:  # the published code's unweighted mean over widths
        recon = [float(sum(t[q] for t in targets) / len(bits)) for q in range(n)]
    return ColumnRule(
        master_bits, tuple(bits), tuple(lambdas), slicing, compensation,
        bp64, bp32, torch.tensor(recon, dtype=torch.float64),
    )


def _envelope_breakpoints(slope: list[Fraction], icept: list[Fraction]) -> list[Fraction | None]:
    """Thresholds t_j (j = 0..n-2) with argmin_q (C_q - 2 A_q u) > j  iff  u > t_j.

    Codes are lines y_q(u) = C_q - 2 A_q u with A_q non-decreasing in q; the minimum over q is
    their lower envelope, walked from u = -inf (q = 0) upward. Ties go to the smaller code, so a
    code that is optimal only at a single point never enters the envelope.
    """
    n = len(slope)
    hull: list[int] = []  # codes on the envelope, increasing
    cross: list[Fraction] = []  # cross[i]: u where hull[i+1] takes over from hull[i]
    for q in range(n):
        if hull and slope[q] == slope[hull[-1]]:
            if icept[q] >= icept[hull[-1]]:
                continue  # parallel and never lower: the smaller code keeps every tie
            hull.pop()
            if cross:
                cross.pop()
        while hull:
            t = hull[-1]
            u = (icept[q] - icept[t]) / (2 * (slope[q] - slope[t]))
            if cross and u <= cross[-1]:
                hull.pop()
                cross.pop()
                continue
            cross.append(u)
            break
        hull.append(q)
    thresholds = []
    h = 0
    for j in range(n - 1):
        while h + 1 < len(hull) and hull[h + 1] <= j:
            h += 1
        thresholds.append(cross[h] if h < len(cross) else None)  # None: never exceeded
    return thresholds


def _round_down(x: Fraction | None, dtype) -> float:
    """The largest value of ``dtype`` that is <= x, so that (u > bp) == (u > x) for every u."""
    if x is None:
        return float("inf")
    v = dtype(float(x))
    if Fraction(float(v)) > x:
        v = np.nextafter(v, dtype(-np.inf), dtype=dtype)
    return float(v)
