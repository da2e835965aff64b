"""The public entry points of the solver core."""

from __future__ import annotations

import torch

from .config import QuantConfig
from .gptq import rtn, solve
from .hessian import HessianAccumulator
from .quantized import QuantizedWeight

HessianLike = HessianAccumulator | torch.Tensor | None


def quantize_layer(
    weight: torch.Tensor, hessian: HessianLike, config: QuantConfig, backend: str = "auto"
) -> QuantizedWeight:
    """Quantize one weight matrix [out, in] with the Hessian of its inputs.

    ``hessian`` is a :class:`HessianAccumulator` or an [in, in] tensor (ignored by ``rtn``).
    The solve runs on ``weight``'s device; ``backend`` picks the in-block loop
    (``"auto"``: Triton on CUDA when installed, torch otherwise).
    """
    return quantize_layers([weight], hessian, config, backend)[0]


def quantize_layers(
    weights: list[torch.Tensor], hessian: HessianLike, config: QuantConfig, backend: str = "auto"
) -> list[QuantizedWeight]:
    """Quantize layers that read the same input (q/k/v, gate/up) in one pass over one Hessian."""
    if not weights:
        raise ValueError("weights is empty; pass at least one [out, in] matrix")
    cols = weights[0].shape[-1]
    for i, w in enumerate(weights):
        if w.dim() != 2:
            raise ValueError(f"weights[{i}] has shape {tuple(w.shape)}; expected [out, in]")
        if w.shape[1] != cols:
            raise ValueError(
                f"weights[{i}] reads {w.shape[1]} inputs but weights[0] reads {cols}; only layers "
                "that share one input can be solved together"
            )
        if not torch.isfinite(w).all():
            raise ValueError(f"weights[{i}] contains NaN or inf; fix the model weights first")
    config.check_shape(cols)
    stacked = weights[0] if len(weights) == 1 else torch.cat([w.to(weights[0].device) for w in weights])
    if config.method == "rtn":
        result = rtn(stacked, config)
    else:
        h = _hessian_tensor(hessian, cols)
        result = solve(stacked, h, config, backend=backend)
    return result.split_rows([w.shape[0] for w in weights]) if len(weights) > 1 else [result]


def _hessian_tensor(hessian: HessianLike, cols: int) -> torch.Tensor:
    if isinstance(hessian, HessianAccumulator):
        if hessian.num_tokens == 0:
            raise ValueError("the HessianAccumulator saw no tokens; feed calibration data with .add(x)")
        hessian = hessian.hessian
    if hessian is None:
        raise ValueError("GPTQ and MatGPTQ need a Hessian; pass a HessianAccumulator or [in, in] tensor")
    if tuple(hessian.shape) != (cols, cols):
        raise ValueError(f"Hessian has shape {tuple(hessian.shape)}; expected ({cols}, {cols})")
    if not torch.isfinite(hessian).all():
        raise ValueError("the Hessian contains NaN or inf; check the calibration activations")
    return hessian
