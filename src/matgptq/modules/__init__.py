"""nn.Modules over quantized weights."""

from .quant_linear import QuantLinear

__all__ = ["QuantLinear"]
