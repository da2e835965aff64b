"""Packed layouts and matmul kernels for sliced codes. Pure tensor math: knows nothing of models.

- :mod:`.pack`: fixed-width and resident (nested) layouts, packed with torch ops on any device.
- :mod:`.dispatch`: ``quant_matmul(x, packed, bits)``: Triton kernels on CUDA, plain torch elsewhere.
"""

from .pack import LAYOUTS, PackedWeight, dequantize_packed, pack, unpack_codes

__all__ = ["LAYOUTS", "PackedWeight", "dequantize_packed", "pack", "unpack_codes"]
