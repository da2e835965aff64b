"""Pure tensor math: grids, slicing, column rules and the GPTQ solver. Knows nothing of models."""

from .api import quantize_layer, quantize_layers
from .config import QuantConfig
from .grid import code_values, dequantize, group_params, slice_codes, sliced_zero
from .gptq import rtn, solve
from .hessian import HessianAccumulator
from .quantized import QuantizedWeight, SolveStats
from .rules import ColumnRule, make_rule, rule_for

__all__ = [
    "ColumnRule", "HessianAccumulator", "QuantConfig", "QuantizedWeight", "SolveStats",
    "code_values", "dequantize", "group_params", "make_rule", "quantize_layer", "quantize_layers",
    "rtn", "rule_for", "slice_codes", "sliced_zero", "solve",
]
