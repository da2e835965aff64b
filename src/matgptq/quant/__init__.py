"""Pure tensor math: grids, slicing, column rules and the GPTQ solver. Knows nothing of models."""

from .config import QuantConfig
from .grid import code_values, dequantize, group_params, slice_codes, sliced_zero
from .quantized import QuantizedWeight, SolveStats
