"""Slow, obviously-correct references used as test oracles (float64, exhaustive, no tricks)."""

from __future__ import annotations

import torch


def slice_value(q: int, m: int, b: int, rule: str) -> float:
    """T_b(q) written straight from METHOD §1, one integer at a time."""
    d = m - b
    if d == 0:
        return float(q)
    if rule == "round":
        k = min(q // 2**d + (q >> (d - 1)) % 2, 2**b - 1)
        return float(k * 2**d)
    k = q // 2**d
    return k * 2**d + (2**d - 1) / 2


def value_table(m: int, bits, rule: str) -> torch.Tensor:
    """[len(bits), 2^m] float64 table of T_b(q)."""
    return torch.tensor([[slice_value(q, m, b, rule) for q in range(2**m)] for b in bits],
                        dtype=torch.float64)


def exhaustive_codes(u: torch.Tensor, m: int, bits, lambdas, rule: str, chunk: int = 1 << 12):
    """argmin_q Σ_b λ_b (u - T_b(q))² over all 2^m codes; ties to the smaller code."""
    table = value_table(m, bits, rule)  # [B, Q]
    lam = torch.tensor(lambdas, dtype=torch.float64)[:, None, None]
    out = []
    for part in u.double().reshape(-1).split(chunk):
        cost = (lam * (part[None, :, None] - table[:, None, :]) ** 2).sum(0)  # [n, Q]
        out.append(cost.argmin(dim=1))  # first minimum: the smaller code
    return torch.cat(out).reshape(u.shape)


def params_reference(w: torch.Tensor, m: int, sym: bool, scale_dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row scale/zero of a group, zero inside the range, scale rounded to its storage dtype."""
    maxq = 2**m - 1
    lo = torch.clamp(w.min(dim=1).values, max=0)
    hi = torch.clamp(w.max(dim=1).values, min=0)
    if sym:
        hi = torch.maximum(hi, -lo)
        lo = -hi
    both_zero = (lo == 0) & (hi == 0)
    lo[both_zero], hi[both_zero] = -1.0, 1.0
    s = ((hi - lo) / maxq).to(scale_dtype).to(w.dtype)
    z = torch.full_like(s, 2 ** (m - 1)) if sym else torch.clamp(torch.round(-lo / s), 0, maxq)
    return s, z


def gptq_reference(W: torch.Tensor, H: torch.Tensor, cfg) -> dict:
    """GPTQ / MatGPTQ in float64, one column at a time, updating every later column at once.

    Returns codes in processing (permuted) order, the permutation, and per-group scales/zeros.
    """
    W = W.double().clone()
    H = H.double().clone()
    R, C = W.shape
    m = cfg.master_bits
    table = value_table(m, cfg.bits, cfg.slicing)
    lam = torch.tensor(cfg.lambdas, dtype=torch.float64)
    if cfg.compensation == "weighted":
        recon = (lam[:, None] * table).sum(0) / lam.sum()
    else:
        recon = table.mean(0)
    sdt = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[cfg.scale_dtype]

    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    G = cfg.group_size or C
    n_groups = C // G
    scales = torch.zeros(R, n_groups, dtype=torch.float64)
    zeros = torch.zeros(R, n_groups, dtype=torch.float64)
    if cfg.group_size is None or cfg.static_groups:
        for g in range(n_groups):
            scales[:, g], zeros[:, g] = params_reference(W[:, g * G:(g + 1) * G], m, cfg.sym, sdt)
    perm = torch.arange(C)
    if cfg.act_order:
        perm = torch.argsort(torch.diag(H), descending=True, stable=True)
        W, H = W[:, perm], H[perm][:, perm]
    H = H + cfg.damp * torch.diag(H).mean() * torch.eye(C, dtype=torch.float64)
    U = torch.linalg.cholesky(torch.linalg.inv(H), upper=True)
    codes = torch.zeros(R, C, dtype=torch.long)
    for j in range(C):
        if cfg.static_groups or cfg.group_size is None:
            g = int(perm[j]) // G if cfg.static_groups else j // G
        else:
            g = j // G
            if j % G == 0:
                scales[:, g], zeros[:, g] = params_reference(W[:, j:j + G], m, cfg.sym, sdt)
        s, z = scales[:, g], zeros[:, g]
        u = W[:, j] / s + z
        if cfg.method == "rtn":
            raise ValueError("the reference is for GPTQ/MatGPTQ")
        q = exhaustive_codes(u, m, cfg.bits, cfg.lambdas, cfg.slicing)
        codes[:, j] = q
        err = (W[:, j] - s * (recon[q] - z)) / U[j, j]
        W[:, j + 1:] -= torch.outer(err, U[j, j + 1:])
    return {"codes": codes, "perm": perm, "scales": scales, "zeros": zeros}


def correlated_inputs(n: int, c: int, seed: int, outliers: int = 4) -> torch.Tensor:
    """Activations with a decaying spectrum and a few outlier channels, like an LLM's."""
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(c, c, generator=g, dtype=torch.float64))
    spectrum = torch.logspace(0, -2, c, dtype=torch.float64)
    x = (torch.randn(n, c, generator=g, dtype=torch.float64) * spectrum) @ basis.T
    x[:, :outliers] *= 10
    return x
