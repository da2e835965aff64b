"""The nested ("Matryoshka") integer grid (METHOD.md §1).

Pure tensor math: per-row / per-group scale and zero, master quantization, slicing a master
code to ``b`` bits under the ``round`` or ``nested`` rule, and dequantization at any b <= M.

Every slice can be written as ``w = s * (k * 2**d - z_b)`` with ``d = M - b``: a kernel needs
only the sliced code ``k``, the scale ``s`` and the per-width zero ``z_b`` (:func:`sliced_zero`).
"""

from __future__ import annotations

from typing import Literal

import torch

SlicingRule = Literal["round", "nested"]
SLICING_RULES: tuple[str, ...] = ("round", "nested")


def max_code(bits: int) -> int:
    return (1 << bits) - 1


def group_params(
    w: torch.Tensor,
    master_bits: int,
    sym: bool,
    scale_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero for each row of ``w`` ([rows, cols] -> [rows], [rows]).

    The range always includes zero (min <= 0 <= max), so an all-positive or all-negative group
    is never clipped. Symmetric: z = 2^(M-1), s = 2*max|w| / (2^M - 1). Asymmetric:
    s = (max - min) / (2^M - 1), z = clamp(round(-min / s), 0, 2^M - 1). An all-zero row gets
    the range [-1, 1]. ``scale_dtype`` rounds the scale to its storage precision first, so the
    solver compensates for the scale that is actually stored. Zeros are returned as float.
    """
    maxq = max_code(master_bits)
    xmin = w.amin(dim=1).clamp(max=0)
    xmax = w.amax(dim=1).clamp(min=0)
    if sym:
        xmax = torch.maximum(-xmin, xmax)
        xmin = -xmax
    dead = (xmin == 0) & (xmax == 0)
    xmin = torch.where(dead, -torch.ones_like(xmin), xmin)
    xmax = torch.where(dead, torch.ones_like(xmax), xmax)
    scale = (xmax - xmin) / maxq
    if scale_dtype is not None and scale_dtype != scale.dtype:
        tiny = torch.finfo(scale_dtype).tiny
        scale = scale.clamp(min=tiny).to(scale_dtype).to(w.dtype)
    if sym:
        zero = torch.full_like(scale, float(1 << (master_bits - 1)))
    else:
        zero = torch.round(-xmin / scale).clamp(0, maxq)
    return scale, zero


def slice_codes(q: torch.Tensor, master_bits: int, bits: int, rule: SlicingRule) -> torch.Tensor:
    """Master codes -> b-bit codes k in [0, 2^b - 1] (integer tensor, same dtype as ``q``)."""
    _check_slice(master_bits, bits, rule)
    d = master_bits - bits
    if d == 0:
        return q
    qi = q.to(torch.int32)
    k = qi >> d
    if rule == "round":
        k = torch.clamp(k + ((qi >> (d - 1)) & 1), max=max_code(bits))
    return k.to(q.dtype)


def sliced_zero(zero: torch.Tensor, master_bits: int, bits: int, rule: SlicingRule) -> torch.Tensor:
    """The per-width zero z_b with w = s * (k * 2^d - z_b)."""
    _check_slice(master_bits, bits, rule)
    d = master_bits - bits
    if rule == "nested" and d > 0:
        return zero - ((1 << d) - 1) / 2
    return zero


def code_values(master_bits: int, bits: int, rule: SlicingRule, dtype=torch.float64) -> torch.Tensor:
    """T_b(q) for every master code q, in master-code units: s * (T_b(q) - z) is the b-bit value."""
    q = torch.arange(1 << master_bits)
    k = slice_codes(q, master_bits, bits, rule).to(dtype)
    d = master_bits - bits
    offset = ((1 << d) - 1) / 2 if (rule == "nested" and d > 0) else 0.0
    return k * (1 << d) + offset


def dequantize(
    q: torch.Tensor,
    scale: torch.Tensor,
    zero: torch.Tensor,
    master_bits: int,
    bits: int,
    rule: SlicingRule,
    group_size: int | None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Dequantize master codes ``q`` [R, C] at ``bits`` with per-group ``scale``/``zero`` [R, G]."""
    k = slice_codes(q, master_bits, bits, rule).to(dtype)
    zb = sliced_zero(zero.to(dtype), master_bits, bits, rule)
    s = scale.to(dtype)
    if group_size is not None and s.shape[1] > 1:
        s = s.repeat_interleave(group_size, dim=1)
        zb = zb.repeat_interleave(group_size, dim=1)
    return s * (k * float(1 << (master_bits - bits)) - zb)


def _check_slice(master_bits: int, bits: int, rule: str) -> None:
    if rule not in SLICING_RULES:
        raise ValueError(f"unknown slicing rule {rule!r}; use one of {SLICING_RULES}")
    if not 1 <= bits <= master_bits:
        raise ValueError(
            f"cannot slice {master_bits}-bit master codes to {bits} bits; "
            f"choose bits in 1..{master_bits}"
        )
