"""Levels, per-layer costs, the memory budget and layer groups (pure logic, no models).

A candidate is a tuple of slice widths, one per quantized linear in a fixed order. Its cost is
Σ numel·bits, plus, with ``count_overhead``, the bits of every layer's scales (and zeros for
asymmetric grids), which do not depend on the width. It fits when

    cost ≤ target · Σ numel        (integer bits; the right side is rounded down)

so ``target`` is the average bits per weight, codes only, or codes + scales (+ zeros).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_LEVELS = (2, 3, 4, 6, 8)


@dataclass(frozen=True)
class Layer:
    name: str
    shape: tuple[int, int]  # (out, in)
    overhead_bits: int = 0  # scales (+ zeros) of this layer, in bits

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]


def check_levels(levels: Sequence[int] | None, master_bits: int) -> tuple[int, ...]:
    """Sorted distinct widths the checkpoint can serve (2..master_bits); default 2,3,4,6,8 ∩ that."""
    if levels is None:
        out = tuple(b for b in DEFAULT_LEVELS if b <= master_bits)
        if master_bits not in out:
            out = out + (master_bits,)
        return out
    try:
        out = tuple(sorted({int(b) for b in levels}))
    except (TypeError, ValueError):
        raise ValueError(f"levels={levels!r} must be integers in 2..{master_bits}") from None
    bad = [b for b in out if not 2 <= b <= master_bits]
    if bad:
        raise ValueError(f"levels {bad} cannot be served by this checkpoint (master width {master_bits}); "
                         f"choose levels in 2..{master_bits}, e.g. --levels 2,3,4,{master_bits}")
    if len(out) < 2:
        raise ValueError(f"levels={list(out)}: give at least two widths to choose from, e.g. 2,3,4,6,8")
    return out


class Budget:
    """Costs and the budget check for candidates over ``layers`` and ``levels``."""

    def __init__(self, layers: Sequence[Layer], levels: Sequence[int], target: float, count_overhead: bool = False):
        if not layers:
            raise ValueError("no quantized layers to search over")
        self.layers = list(layers)
        self.levels = tuple(sorted(levels))
        self.count_overhead = bool(count_overhead)
        self.total_numel = sum(layer.numel for layer in self.layers)
        self.overhead = sum(layer.overhead_bits for layer in self.layers) if self.count_overhead else 0
        try:
            self.target = float(target)
        except (TypeError, ValueError):
            raise ValueError(f"target bits {target!r} is not a number; give e.g. 3.25") from None
        if not math.isfinite(self.target):
            raise ValueError(f"target bits {target!r} is not a finite number; give e.g. 3.25")
        self.limit = math.floor(self.target * self.total_numel + 1e-6)
        what = "bits per weight" + (" (codes + scales)" if self.count_overhead else "")
        lo = self.average_bits([self.levels[0]] * len(self.layers))
        hi = self.average_bits([self.levels[-1]] * len(self.layers))
        if self.cost([self.levels[0]] * len(self.layers)) > self.limit:
            raise ValueError(f"target {self.target:g} {what} is below the lowest level: every layer at "
                             f"{self.levels[0]} bits already needs {lo:.4f}; give a target >= {lo:.4f} "
                             "or add a lower level")
        if self.target > hi + 1e-9:
            raise ValueError(f"target {self.target:g} {what} is above the highest level: every layer at "
                             f"{self.levels[-1]} bits needs only {hi:.4f}; give a target <= {hi:.4f} "
                             f"(or load the checkpoint at {self.levels[-1]} bits)")

    def cost(self, bits: Sequence[int]) -> int:
        """Bits of the candidate (codes, plus scales/zeros if counted)."""
        return sum(layer.numel * int(b) for layer, b in zip(self.layers, bits, strict=True)) + self.overhead

    def fits(self, bits: Sequence[int]) -> bool:
        return self.cost(bits) <= self.limit

    def average_bits(self, bits: Sequence[int]) -> float:
        return self.cost(bits) / self.total_numel

    def as_map(self, bits: Sequence[int]) -> dict[str, int]:
        return {layer.name: int(b) for layer, b in zip(self.layers, bits, strict=True)}

    def from_map(self, layer_bits: dict[str, int]) -> tuple[int, ...]:
        return tuple(int(layer_bits[layer.name]) for layer in self.layers)

    def uniform_floor(self) -> int:
        """The highest level whose uniform assignment fits."""
        n = len(self.layers)
        return max(b for b in self.levels if self.fits([b] * n))


def group_layers(layers: Sequence[Layer], rule: str = "shape") -> list[list[int]]:
    """Indices of layers that may trade levels with each other.

    ``"shape"``: layers of one (out, in) shape (a swap then moves the same number of bits);
    ``"none"``: one group of all layers.
    """
    if rule == "none":
        return [list(range(len(layers)))]
    if rule != "shape":
        raise ValueError(f"group rule {rule!r}: use 'shape' or 'none'")
    groups: dict[tuple[int, int], list[int]] = {}
    for i, layer in enumerate(layers):
        groups.setdefault(tuple(layer.shape), []).append(i)
    return list(groups.values())
