"""The result of quantizing one linear layer: master codes plus what it takes to read them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .config import QuantConfig
from .grid import dequantize as _dequantize


@dataclass
class SolveStats:
    """What happened while solving: reported, never fatal."""

    damp: float = 0.0  # relative damping finally used
    damp_retries: int = 0  # how many times Cholesky failed and damping grew
    dead_inputs: int = 0  # input columns with zero Hessian diagonal
    loss: float = 0.0  # GPTQ objective proxy: sum of squared scaled errors
    seconds: float = 0.0


@dataclass
class QuantizedWeight:
    """Master codes of one weight matrix.

    - ``codes``: uint8 [R, C], master codes in *storage order*;
    - ``scales``: [R, G] in the config's scale dtype; ``zeros``: uint8 [R, G] master zeros;
    - ``perm``: int64 [C] or None; storage column j holds original input column ``perm[j]``
      (present only for act_order without static groups: groups were formed in permuted order).
      An inference kernel multiplies with ``x[..., perm]``.
    """

    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    perm: torch.Tensor | None
    config: QuantConfig
    stats: SolveStats = field(default_factory=SolveStats)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.codes.shape)  # type: ignore[return-value]

    @property
    def group_size(self) -> int:
        return self.config.group_size or self.codes.shape[1]

    def dequantize(self, bits: int | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight at ``bits`` (default: master width), in original column order."""
        m = self.config.master_bits
        bits = m if bits is None else int(bits)
        w = _dequantize(
            self.codes, self.scales, self.zeros, m, bits, self.config.slicing, self.group_size, dtype
        )
        if self.perm is not None:
            out = torch.empty_like(w)
            out[:, self.perm] = w
            w = out
        return w

    def split_rows(self, sizes: list[int]) -> list["QuantizedWeight"]:
        """Split a jointly solved [sum(sizes), C] result into one result per layer."""
        parts = zip(
            self.codes.split(sizes), self.scales.split(sizes), self.zeros.split(sizes)
        )
        return [QuantizedWeight(c, s, z, self.perm, self.config, self.stats) for c, s, z in parts]

    def state_dict(self) -> dict[str, torch.Tensor]:
        d = {"codes": self.codes, "scales": self.scales, "zeros": self.zeros}
        if self.perm is not None:
            d["perm"] = self.perm
        return d

    def to(self, device: Any) -> "QuantizedWeight":
        perm = None if self.perm is None else self.perm.to(device)
        return QuantizedWeight(
            self.codes.to(device), self.scales.to(device), self.zeros.to(device), perm,
            self.config, self.stats,
        )
