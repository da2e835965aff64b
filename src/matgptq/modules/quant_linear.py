"""``QuantLinear``: a linear layer over master codes that serves any slice width in place.

The plain-torch path dequantizes the weight once per precision and caches it, so switching
back and forth costs one dequantization per width. All tensors are registered buffers, so
``.to(device)`` moves them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..quant import QuantConfig, QuantizedWeight

LAYOUTS = ("resident", "fixed")


class QuantLinear(nn.Module):
    """y = x · Ŵ_bᵀ + bias, with Ŵ_b the b-bit slice of the stored master codes."""

    def __init__(self, qw: QuantizedWeight, bias: torch.Tensor | None = None, bits: int | None = None,
                 layout: str = "resident", dtype: torch.dtype = torch.float16):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout={layout!r}; use one of {LAYOUTS}")
        self.config: QuantConfig = qw.config
        self.out_features, self.in_features = qw.shape
        self.master_bits = qw.config.master_bits
        self.group_size = qw.group_size
        self.slicing = qw.config.slicing
        self.layout = layout
        self.dtype = dtype
        self.register_buffer("codes", qw.codes.to(torch.uint8))
        self.register_buffer("scales", qw.scales)
        self.register_buffer("zeros", qw.zeros)
        self.register_buffer("perm", qw.perm)
        self.register_buffer("bias", None if bias is None else bias.detach().to(dtype))
        self._cache: dict[int, torch.Tensor] = {}
        self._bits = self.master_bits
        self.set_bits(self.master_bits if bits is None else bits)

    @classmethod
    def from_quantized(cls, qw: QuantizedWeight, bias: torch.Tensor | None = None, bits: int | None = None,
                       layout: str = "resident", dtype: torch.dtype = torch.float16) -> "QuantLinear":
        return cls(qw, bias=bias, bits=bits, layout=layout, dtype=dtype)

    @property
    def bits(self) -> int:
        return self._bits

    @bits.setter
    def bits(self, value: int) -> None:
        self.set_bits(value)

    def set_bits(self, bits: int) -> None:
        bits = int(bits)
        if not 1 <= bits <= self.master_bits:
            raise ValueError(
                f"bits={bits} cannot be served from {self.master_bits}-bit master codes; "
                f"choose 1..{self.master_bits}"
            )
        self._bits = bits

    def quantized_weight(self) -> QuantizedWeight:
        return QuantizedWeight(self.codes, self.scales, self.zeros, self.perm, self.config)

    def dequantized_weight(self, bits: int | None = None) -> torch.Tensor:
        """[out, in] weight at ``bits`` (default: the current width), in original column order."""
        bits = self._bits if bits is None else int(bits)
        return self.quantized_weight().dequantize(bits, torch.float32).to(self.dtype)

    def _weight(self) -> torch.Tensor:
        w = self._cache.get(self._bits)
        if w is None or w.device != self.codes.device:
            w = self.dequantized_weight()
            self._cache[self._bits] = w
        return w

    def clear_cache(self) -> None:
        self._cache.clear()

    def _apply(self, fn, *args, **kwargs):
        self._cache.clear()  # cached weights follow the codes to their new device / dtype
        return super()._apply(fn, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self._weight()
        return F.linear(x.to(w.dtype), w, self.bias).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self._bits}, "
                f"master_bits={self.master_bits}, group_size={self.group_size}, slicing={self.slicing}")
