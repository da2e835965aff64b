"""Streaming Hessian proxy H = (2/N) Σ xᵀx over calibration tokens (METHOD §2)."""

from __future__ import annotations

import torch


class HessianAccumulator:
    """Accumulates H from activations of any leading shape, token-weighted, in fp32 (or fp64).

    ``add`` may be called with batches of different sizes; the running average equals the one
    over all tokens at once.
    """

    def __init__(self, in_features: int, device=None, dtype: torch.dtype = torch.float32):
        if in_features < 1:
            raise ValueError(f"in_features={in_features} must be positive")
        self.in_features = in_features
        self.hessian = torch.zeros(in_features, in_features, device=device, dtype=dtype)
        self.num_tokens = 0

    @torch.no_grad()
    def add(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"activation width {x.shape[-1]} does not match the layer's in_features "
                f"{self.in_features}"
            )
        x = x.reshape(-1, self.in_features).to(device=self.hessian.device, dtype=self.hessian.dtype)
        n = x.shape[0]
        if n == 0:
            return
        total = self.num_tokens + n
        self.hessian.mul_(self.num_tokens / total)
        self.hessian.addmm_(x.t(), x, alpha=2.0 / total)
        self.num_tokens = total

    def merge(self, other: "HessianAccumulator") -> None:
        """Combine with an accumulator over other tokens (e.g. another rank's)."""
        total = self.num_tokens + other.num_tokens
        if total == 0:
            return
        self.hessian.mul_(self.num_tokens / total).add_(
            other.hessian.to(self.hessian), alpha=other.num_tokens / total
        )
        self.num_tokens = total
