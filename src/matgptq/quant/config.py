"""Solver configuration: a dataclass that rejects invalid values with a message naming the fix."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

import torch

from .grid import SLICING_RULES

METHODS = ("rtn", "gptq", "matgptq")
COMPENSATIONS = ("weighted", "mean")
MIN_BITS, MAX_BITS = 2, 8

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize one linear layer (or several that share an input).

    - ``method``: ``"gptq"`` (one width), ``"matgptq"`` (several widths, METHOD §3), or
      ``"rtn"`` (round to nearest with no error feedback; with several widths it rounds with
      the multi-precision objective).
    - ``bits``: the trained widths B (an int or a tuple); ``master_bits`` M defaults to max(B).
    - ``lambdas``: weights λ_b, one per entry of ``bits`` (default all 1).
    - ``group_size``: columns per group, or ``None`` for one group per row.
    - ``slicing``: ``"round"`` (published) or ``"nested"`` (MSB truncation, mid-point).
    - ``compensation``: ``"weighted"`` (λ-weighted mean residual, METHOD §3) or ``"mean"``
      (the published code's unweighted mean; identical for equal λ).
    - ``act_order`` / ``static_groups``, ``damp`` (relative diagonal damping),
      ``block_size`` (lazy batch width), ``scale_dtype`` (storage precision of scales).
    """

    method: Literal["rtn", "gptq", "matgptq"] = "matgptq"
    bits: tuple[int, ...] = (8, 4, 3)
    lambdas: tuple[float, ...] | None = None
    master_bits: int | None = None
    group_size: int | None = 128
    sym: bool = True
    slicing: Literal["round", "nested"] = "round"
    compensation: Literal["weighted", "mean"] = "weighted"
    act_order: bool = False
    static_groups: bool = False
    damp: float = 0.01
    damp_retries: int = 6
    block_size: int = 128
    scale_dtype: str = "float16"

    def __post_init__(self) -> None:
        bits = self.bits
        if isinstance(bits, int) and not isinstance(bits, bool):
            bits = (bits,)
        try:
            bits = tuple(int(b) for b in bits)
        except TypeError:
            raise ValueError(f"bits={self.bits!r} must be an int or a sequence of ints") from None
        # keep B sorted from widest to narrowest, carrying each λ with its own width
        lambdas = self.lambdas
        if lambdas is None:
            lambdas = (1.0,) * len(bits)
        if isinstance(lambdas, (int, float)):
            lambdas = (float(lambdas),)
        lambdas = tuple(float(x) for x in lambdas)
        if len(lambdas) != len(bits):
            raise ValueError(
                f"lambdas={lambdas} has {len(lambdas)} entries but bits={bits} has {len(bits)}; "
                "give one λ per bit width"
            )
        pairs = sorted(zip(bits, lambdas), key=lambda p: -p[0])
        bits = tuple(p[0] for p in pairs)
        lambdas = tuple(p[1] for p in pairs)
        object.__setattr__(self, "bits", bits)
        object.__setattr__(self, "lambdas", lambdas)
        if self.master_bits is None:
            object.__setattr__(self, "master_bits", max(bits) if bits else None)
        self._validate()

    def _validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; use one of {METHODS}")
        if not self.bits:
            raise ValueError("bits is empty; give at least one width, e.g. bits=(8, 4, 3)")
        for b in self.bits:
            if not MIN_BITS <= b <= MAX_BITS:
                raise ValueError(f"bits={b} is outside the supported range {MIN_BITS}..{MAX_BITS}")
        if len(set(self.bits)) != len(self.bits):
            raise ValueError(f"bits={self.bits} repeats a width; list each width once")
        if self.method == "gptq" and len(self.bits) != 1:
            raise ValueError(
                f"method='gptq' trains one width but bits={self.bits}; "
                "use method='matgptq' for several widths"
            )
        for lam in self.lambdas:
            if not lam > 0 or lam != lam or lam == float("inf"):
                raise ValueError(f"lambda={lam} must be a finite number > 0")
        m = self.master_bits
        if not isinstance(m, int) or not MIN_BITS <= m <= MAX_BITS:
            raise ValueError(f"master_bits={m!r} is outside the supported range {MIN_BITS}..{MAX_BITS}")
        if m < max(self.bits):
            raise ValueError(
                f"master_bits={m} is narrower than the widest trained width {max(self.bits)}; "
                f"use master_bits >= {max(self.bits)}"
            )
        if self.group_size is not None and (not isinstance(self.group_size, int) or self.group_size < 1):
            raise ValueError(
                f"group_size={self.group_size!r} must be a positive int, or None for one group per row"
            )
        if self.slicing not in SLICING_RULES:
            raise ValueError(f"unknown slicing rule {self.slicing!r}; use one of {SLICING_RULES}")
        if self.compensation not in COMPENSATIONS:
            raise ValueError(f"unknown compensation {self.compensation!r}; use one of {COMPENSATIONS}")
        if self.static_groups and not self.act_order:
            raise ValueError("static_groups=True only matters with act_order=True; set act_order=True")
        if not 0 <= self.damp < 1e3 or self.damp != self.damp:
            raise ValueError(f"damp={self.damp} must be a finite number >= 0 (default 0.01)")
        if not isinstance(self.block_size, int) or self.block_size < 1:
            raise ValueError(f"block_size={self.block_size!r} must be a positive int (default 128)")
        if self.scale_dtype not in _DTYPES:
            raise ValueError(f"scale_dtype={self.scale_dtype!r}; use one of {tuple(_DTYPES)}")

    # -- helpers -------------------------------------------------------------------------------
    @property
    def torch_scale_dtype(self) -> torch.dtype:
        return _DTYPES[self.scale_dtype]

    def check_shape(self, in_features: int) -> None:
        """Reject a group size that does not divide the layer's input width."""
        g = self.group_size
        if g is not None and in_features % g != 0:
            divisors = [d for d in (32, 64, 128, 256) if in_features % d == 0]
            raise ValueError(
                f"group_size={g} does not divide the input width {in_features}; "
                f"use a divisor such as {divisors or [in_features]} or group_size=None"
            )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["bits"] = list(self.bits)
        d["lambdas"] = list(self.lambdas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "QuantConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown QuantConfig fields {sorted(unknown)}; known: {sorted(names)}")
        d = dict(d)
        for key in ("bits", "lambdas"):
            if isinstance(d.get(key), list):
                d[key] = tuple(d[key])
        return cls(**d)
