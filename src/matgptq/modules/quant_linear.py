"""``QuantLinear``: a linear layer over packed codes that serves any slice width.

Two layouts (:mod:`matgptq.kernels.pack`):

- ``"resident"`` (default): one packed copy of the master codes; ``bits`` switches precision in
  place, without copying or repacking (a b-bit read touches b bits, b+1 under ``round``).
- ``"fixed"``: only the b-bit slice, b bits per weight; serves that one width.
- ``"lop3"``: only the 2-, 3- or 4-bit slice of a symmetric grid with groups of 128, in the order
  its batch 1-32 GPU kernel decodes with one instruction per fp16 pair (two at 3 bits; larger
  batches: dequantize + cuBLAS). The fastest fp16 decode at those widths; it cannot switch
  precision, and bf16 inputs take a much slower path (use ``"fixed"`` for bf16 models).

On CUDA with Triton the forward pass runs the fused kernels (:func:`quant_matmul`). Elsewhere
(CPU, no Triton) it dequantizes once per precision with plain torch and caches the weight, so
switching back and forth costs one dequantization per width. All tensors are registered
buffers, so ``.to(device)`` moves them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..kernels.dispatch import kernel_supported, quant_matmul, triton_available
from ..kernels.pack import LAYOUTS, SINGLE_WIDTH, PackedWeight, dequantize_packed, pack, unpack_codes
from ..quant import QuantConfig, QuantizedWeight

# "auto": Triton kernels for CUDA inputs; "triton": always (the tests run them under the
# interpreter on CPU); "torch": never.
KERNELS = "auto"


class QuantLinear(nn.Module):
    """y = x · Ŵ_bᵀ + bias, with Ŵ_b the b-bit slice of the stored codes."""

    def __init__(self, qw: QuantizedWeight, bias: torch.Tensor | None = None, bits: int | None = None,
                 layout: str = "resident", dtype: torch.dtype = torch.float16):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout={layout!r}; use one of {LAYOUTS}")
        cfg = qw.config
        self.config: QuantConfig = cfg
        self.out_features, self.in_features = qw.shape
        self.master_bits = cfg.master_bits
        self.group_size = qw.group_size
        self.slicing = cfg.slicing
        self.layout = layout
        self.dtype = dtype
        m = self.master_bits
        bits = m if bits is None else int(bits)
        self._check(bits, allow_any=layout in SINGLE_WIDTH)
        pw = pack(qw.codes, qw.scales, qw.zeros, master_bits=m, slicing=cfg.slicing, group_size=cfg.group_size,
                  layout=layout, bits=bits)
        self._meta = dict(parts=pw.parts, layout=layout, master_bits=m, slicing=cfg.slicing,
                          group_size=pw.group_size, n=pw.n, k=pw.k, fixed_bits=pw.fixed_bits)
        self._scale_dtype = qw.scales.dtype
        self.register_buffer("qweight", pw.qweight)
        self.register_buffer("scales_t", pw.scales)
        self.register_buffer("zeros_t", pw.zeros)
        self.register_buffer("perm", None if qw.perm is None else qw.perm.to(torch.int64))
        self.register_buffer("bias", None if bias is None else bias.detach().to(dtype))
        self._cache: dict[int, torch.Tensor] = {}
        self._bits = bits

    @classmethod
    def from_quantized(cls, qw: QuantizedWeight, bias: torch.Tensor | None = None, bits: int | None = None,
                       layout: str = "resident", dtype: torch.dtype = torch.float16) -> "QuantLinear":
        return cls(qw, bias=bias, bits=bits, layout=layout, dtype=dtype)

    # -- precision ------------------------------------------------------------------------------
    @property
    def packed(self) -> PackedWeight:
        """The packed weight over this module's buffers (on their current device)."""
        return PackedWeight(self.qweight, self.scales_t, self.zeros_t, **self._meta)

    @property
    def bits(self) -> int:
        return self._bits

    @bits.setter
    def bits(self, value: int) -> None:
        self.set_bits(value)

    def _check(self, bits: int, allow_any: bool = False) -> None:
        if not 1 <= bits <= self.master_bits:
            raise ValueError(
                f"bits={bits} cannot be served from {self.master_bits}-bit master codes; "
                f"choose 1..{self.master_bits}"
            )
        if self.layout in SINGLE_WIDTH and not allow_any and bits != self._meta["fixed_bits"]:
            raise ValueError(
                f"this layer holds only the {self._meta['fixed_bits']}-bit slice (layout={self.layout!r}); "
                f"build it with bits={bits} or use layout='resident' to switch in place"
            )

    def set_bits(self, bits: int) -> None:
        """Switch precision. Resident layout: no copy, no repacking (the kernels read the top
        b bits of the one packed copy)."""
        bits = int(bits)
        self._check(bits)
        self._bits = bits

    # -- weights --------------------------------------------------------------------------------
    def dequantized_weight(self, bits: int | None = None) -> torch.Tensor:
        """[out, in] weight at ``bits`` (default: the current width), in original column order."""
        bits = self._bits if bits is None else int(bits)
        self._check(bits)
        w = dequantize_packed(self.packed, bits, torch.float32)
        if self.perm is not None:
            out = torch.empty_like(w)
            out[:, self.perm] = w
            w = out
        return w.to(self.dtype)

    def quantized_weight(self) -> QuantizedWeight:
        """The master codes back as a :class:`QuantizedWeight` (resident layout only)."""
        if self.layout != "resident":
            raise ValueError(f"a {self.layout!r} layer holds only one slice, not the master codes")
        codes = unpack_codes(self.packed, self.master_bits).to(torch.uint8)
        zeros = (torch.full_like(self.scales_t, 1 << (self.master_bits - 1), dtype=torch.uint8).t().contiguous()
                 if self.zeros_t is None else self.zeros_t.t().contiguous())
        return QuantizedWeight(codes, self.scales_t.t().contiguous(), zeros, self.perm, self.config)

    def _weight(self) -> torch.Tensor:
        """The dequantized weight (original column order) for the plain-torch path, cached per
        width: bit-identical to ``F.linear(x, qw.dequantize(b))``."""
        w = self._cache.get(self._bits)
        if w is None or w.device != self.qweight.device:
            w = self.dequantized_weight(self._bits)
            self._cache[self._bits] = w
        return w

    def clear_cache(self) -> None:
        self._cache.clear()

    def _apply(self, fn, *args, **kwargs):
        self._cache.clear()  # cached weights follow the codes to their new device / dtype
        return super()._apply(fn, *args, **kwargs)

    # -- forward --------------------------------------------------------------------------------
    def _use_kernels(self, x: torch.Tensor) -> bool:
        if KERNELS == "torch" or not kernel_supported(self.packed, self._bits):
            return False
        return KERNELS == "triton" or (x.is_cuda and triton_available())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"input has {x.shape[-1]} features, this layer takes {self.in_features}")
        if self._use_kernels(x):
            x_in = x if self.perm is None else x.index_select(-1, self.perm)  # storage column order
            cdt = x.dtype if x.dtype in (torch.float16, torch.bfloat16) else self.dtype
            if cdt not in (torch.float16, torch.bfloat16):
                cdt = torch.float16
            y = quant_matmul(x_in.to(cdt), self.packed, self._bits, self.bias, backend=KERNELS)
            return y.to(x.dtype)
        w = self._weight()
        bias = None if self.bias is None else self.bias.to(w.dtype)
        return F.linear(x.to(w.dtype), w, bias).to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self._bits}, "
                f"master_bits={self.master_bits}, group_size={self.group_size}, slicing={self.slicing}, "
                f"layout={self.layout}")
