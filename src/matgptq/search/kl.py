"""KL(full precision ‖ quantized) over next-token distributions, with top-k sparse targets.

The full-precision distribution P of each token is kept as its k most likely tokens (log-probs and
indices) plus the log of the remaining mass. The quantized distribution Q is coarsened the same
way (the same k tokens + one "rest" bucket) and

    KL_k(P ‖ Q) = Σ_{i ∈ top-k} p_i (log p_i − log q_i) + p_rest (log p_rest − log q_rest).

This is the exact KL between the two coarsened distributions. By the log-sum inequality it is a
lower bound of the full KL, 0 ≤ KL_k ≤ KL, it grows with k (the top-k sets are nested) and it
equals the full KL when k = vocabulary size. All math is in fp32 (float64 inputs stay float64).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SparseTargets:
    logp: torch.Tensor  # [N, k] log-probabilities of the top-k tokens
    index: torch.Tensor  # [N, k] their token ids (int64)
    log_rest: torch.Tensor  # [N] log of the probability mass outside the top k (-inf if none)

    def to(self, device) -> "SparseTargets":
        return SparseTargets(self.logp.to(device), self.index.to(device), self.log_rest.to(device))

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.logp, self.index, self.log_rest))


def _float(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()


def _log_rest(logp: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """log Σ_{i ∉ index} exp(logp_i), per row (-inf when index covers the row)."""
    masked = logp.scatter(1, index, float("-inf"))
    return torch.logsumexp(masked, dim=1)


def topk_targets(logits: torch.Tensor, k: int) -> SparseTargets:
    """Sparse targets from full-precision logits [N, V]."""
    logp = torch.log_softmax(_float(logits), dim=-1)
    k = min(int(k), logp.shape[-1])
    if k < 1:
        raise ValueError(f"top-k={k}: keep at least one token per position; give topk >= 1 (e.g. 256)")
    top, index = logp.topk(k, dim=-1)
    return SparseTargets(top, index, _log_rest(logp, index))


def sparse_kl(target: SparseTargets, logits: torch.Tensor) -> torch.Tensor:
    """Per-token KL_k(P ‖ Q) [N] for quantized logits [N, V] (computed in fp32 or float64)."""
    logq = torch.log_softmax(_float(logits), dim=-1)
    index = target.index.to(logq.device)
    logp = target.logp.to(device=logq.device, dtype=logq.dtype)
    log_rest = target.log_rest.to(device=logq.device, dtype=logq.dtype)
    logq_top = logq.gather(1, index)
    terms = logp.exp() * (logp - logq_top)
    kl = torch.where(torch.isfinite(logp), terms, torch.zeros_like(terms)).sum(1)
    has_rest = torch.isfinite(log_rest)
    if bool(has_rest.any()):
        logq_rest = _log_rest(logq, index)
        rest = log_rest.exp() * (log_rest - logq_rest)
        kl = kl + torch.where(has_rest, rest, torch.zeros_like(rest))
    return kl


def dense_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """Per-token full KL(P ‖ Q) [N] (the reference for tests; pass float64 for an oracle)."""
    logp = torch.log_softmax(_float(logits_p), dim=-1)
    logq = torch.log_softmax(_float(logits_q), dim=-1)
    return (logp.exp() * (logp - logq)).sum(-1)
