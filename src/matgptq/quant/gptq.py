"""The one GPTQ loop (METHOD §2), with a pluggable column rule (METHOD §3).

``solve`` owns everything that is the same for GPTQ, MatGPTQ and their variants: dead inputs,
act_order, damping with retries, the upper Cholesky factor of H⁻¹, lazy blocks and group
parameters. What differs between methods is only the :class:`~matgptq.quant.rules.ColumnRule`.
The column-by-column work inside a block runs either in plain torch (any device) or in a fused
Triton kernel (CUDA); both follow the same arithmetic.
"""

from __future__ import annotations

import logging
import math
import time

import torch

from .config import QuantConfig
from .grid import group_params, max_code
from .quantized import QuantizedWeight, SolveStats
from .rules import ColumnRule, rule_for

log = logging.getLogger(__name__)


def inverse_cholesky_upper(
    hessian: torch.Tensor, damp: float, retries: int
) -> tuple[torch.Tensor, float, int]:
    """Upper factor U of H⁻¹ (H⁻¹ = UᵀU) after damping H += damp·mean(diag H)·I.

    With J the reversal permutation and JHJ = LLᵀ, U = J L⁻¹ J: one Cholesky and one triangular
    inverse. When Cholesky fails the damping grows ×10 and is retried (reported, never fatal
    while retries remain). Returns (U, damping used, retries used).
    """
    n = hessian.shape[0]
    mean_diag = hessian.diagonal().mean().item()
    eye = torch.eye(n, device=hessian.device, dtype=hessian.dtype)
    flipped = hessian.flip(0, 1)
    rel = damp
    for attempt in range(retries + 1):
        h = flipped + (rel * mean_diag) * eye
        lower, info = torch.linalg.cholesky_ex(h)
        if info.item() == 0:
            u = torch.linalg.solve_triangular(lower, eye, upper=False).flip(0, 1)
            if torch.isfinite(u.diagonal()).all():
                if attempt:
                    log.warning(
                        "Hessian not positive definite at damp=%g; succeeded with damp=%g",
                        damp, rel,
                    )
                return u, rel, attempt
        rel = rel * 10 if rel > 0 else 1e-4
    raise RuntimeError(
        f"Cholesky of the Hessian failed even with damping {rel / 10:g}·mean(diag H); "
        "the calibration activations are degenerate (check for NaN/inf inputs or too few tokens)"
    )


def effective_block(group_size: int | None, block_size: int) -> int:
    """Block width such that every group starts at a block boundary."""
    return block_size if group_size is None else math.gcd(group_size, block_size)


def rtn(weight: torch.Tensor, config: QuantConfig, rule: ColumnRule | None = None) -> QuantizedWeight:
    """Round every weight with the column rule: no Hessian and no error feedback."""
    t0 = time.perf_counter()
    rule = rule or rule_for(config)
    w = _working_copy(weight)
    scales, zeros = _all_group_params(w, config)
    s, z = _per_column(scales, zeros, _group_index(w.shape[1], config, None, w.device))
    codes = rule.codes(w / s + z).to(torch.uint8)
    stats = SolveStats(seconds=time.perf_counter() - t0)
    return _result(codes, scales, zeros, None, config, stats)


@torch.no_grad()
def solve(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    config: QuantConfig,
    rule: ColumnRule | None = None,
    backend: str = "auto",
) -> QuantizedWeight:
    """GPTQ with the config's column rule. ``weight`` [R, C]; ``hessian`` [C, C] (not modified)."""
    t0 = time.perf_counter()
    rule = rule or rule_for(config)
    block_fn = _block_backend(backend, weight.device)
    w = _working_copy(weight)
    rows, cols = w.shape
    h = hessian.to(device=w.device, dtype=w.dtype).clone()

    dead = h.diagonal() == 0
    h.diagonal()[dead] = 1
    w[:, dead] = 0

    perm = None
    group_size = config.group_size or cols
    precomputed = config.group_size is None or config.static_groups
    if precomputed:  # per-row or static groups: all parameters from the weights before the loop
        scales, zeros = _all_group_params(w, config)
    else:
        n_groups = cols // group_size
        scales = torch.empty(rows, n_groups, device=w.device, dtype=w.dtype)
        zeros = torch.empty_like(scales)
    if config.act_order:
        perm = torch.argsort(h.diagonal(), descending=True, stable=True)
        w = w[:, perm]
        h = h[perm][:, perm]
    gidx = _group_index(cols, config, perm, w.device)

    u, damp_used, retries = inverse_cholesky_upper(h, config.damp, config.damp_retries)
    del h
    codes = torch.empty(rows, cols, device=w.device, dtype=torch.uint8)
    recon = rule.recon(w.dtype, w.device)
    bp = rule.breakpoints(w.dtype, w.device)
    loss = torch.zeros((), device=w.device, dtype=w.dtype)

    block = effective_block(config.group_size, config.block_size)
    for c0 in range(0, cols, block):
        c1 = min(c0 + block, cols)
        if not precomputed and c0 % group_size == 0:
            g = c0 // group_size
            s_g, z_g = group_params(
                w[:, c0 : c0 + group_size], config.master_bits, config.sym, config.torch_scale_dtype
            )
            scales[:, g], zeros[:, g] = s_g, z_g
        s, z = _per_column(scales, zeros, gidx[c0:c1])
        err = block_fn(w[:, c0:c1], u[c0:c1, c0:c1], s, z, bp, recon, rule, codes[:, c0:c1], loss)
        if c1 < cols:
            w[:, c1:].addmm_(err, u[c0:c1, c1:], alpha=-1)

    if perm is not None and config.static_groups:
        codes = codes[:, torch.argsort(perm)]  # static groups: store in original order
        perm = None
    stats = SolveStats(
        damp=damp_used, damp_retries=retries, dead_inputs=int(dead.sum()),
        loss=float(loss) / 2, seconds=0.0,
    )
    result = _result(codes, scales, zeros, perm, config, stats)
    if w.is_cuda:
        torch.cuda.synchronize(w.device)
    result.stats.seconds = time.perf_counter() - t0
    return result


def block_torch(w, u, s, z, bp, recon, rule, codes_out, loss):
    """Column-by-column GPTQ inside one lazy block, in place on ``w``; returns scaled errors."""
    rows, n = w.shape
    err = torch.empty_like(w)
    for i in range(n):
        col = w[:, i]
        q = torch.searchsorted(bp, (col / s[:, i] + z[:, i]).contiguous())
        diff = col - s[:, i] * (recon[q] - z[:, i])
        e = diff / u[i, i]
        if i + 1 < n:
            w[:, i + 1 :].addr_(e, u[i, i + 1 :], alpha=-1)
        codes_out[:, i] = q.to(torch.uint8)
        err[:, i] = e
        loss += e.square().sum()
    return err


def _block_backend(backend: str, device: torch.device):
    if backend not in ("auto", "torch", "triton"):
        raise ValueError(f"backend={backend!r}; use 'auto', 'torch' or 'triton'")
    if backend == "torch" or (backend == "auto" and device.type != "cuda"):
        return block_torch
    from .triton_block import block_triton, triton_available

    if not triton_available():
        if backend == "triton":
            raise RuntimeError("backend='triton' needs the triton package: pip install 'matgptq[gpu]'")
        return block_torch
    return block_triton


def _working_copy(weight: torch.Tensor) -> torch.Tensor:
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    return weight.detach().to(dtype=dtype, copy=True)


def _all_group_params(w: torch.Tensor, config: QuantConfig) -> tuple[torch.Tensor, torch.Tensor]:
    rows, cols = w.shape
    g = config.group_size or cols
    s, z = group_params(
        w.reshape(rows * (cols // g), g), config.master_bits, config.sym, config.torch_scale_dtype
    )
    return s.reshape(rows, cols // g), z.reshape(rows, cols // g)


def _group_index(cols: int, config: QuantConfig, perm, device) -> torch.Tensor:
    """Group of each column in processing order."""
    g = config.group_size or cols
    order = torch.arange(cols, device=device)
    if perm is not None and config.static_groups:
        order = perm
    return order // g


def _per_column(scales, zeros, gidx) -> tuple[torch.Tensor, torch.Tensor]:
    return scales[:, gidx], zeros[:, gidx]


def _result(codes, scales, zeros, perm, config: QuantConfig, stats: SolveStats) -> QuantizedWeight:
    return QuantizedWeight(
        codes=codes,
        scales=scales.to(config.torch_scale_dtype),
        zeros=zeros.round().clamp(0, max_code(config.master_bits)).to(torch.uint8),
        perm=perm,
        config=config,
        stats=stats,
    )
