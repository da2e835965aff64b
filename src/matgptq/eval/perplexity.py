"""Perplexity per METHOD §6: one token stream, non-overlapping windows, mean token NLL in fp32."""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


def windows(tokens: torch.Tensor, seq_len: int, max_windows: int | None = None,
            bos_token_id: int | None = None) -> torch.Tensor:
    """Cut a token stream into non-overlapping windows [n, seq_len] (the tail is dropped).

    With ``bos_token_id`` every window starts with BOS followed by ``seq_len - 1`` text tokens.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len={seq_len} must be >= 2")
    step = seq_len - 1 if bos_token_id is not None else seq_len
    n = tokens.numel() // step
    if n == 0:
        raise ValueError(
            f"the evaluation text has {tokens.numel()} tokens, fewer than one window of {seq_len}; "
            "give more text or a shorter seq_len"
        )
    if max_windows is not None:
        n = min(n, int(max_windows))
    w = tokens[: n * step].view(n, step)
    if bos_token_id is not None:
        w = torch.cat([torch.full((n, 1), bos_token_id, dtype=w.dtype), w], dim=1)
    return w


@torch.no_grad()
def perplexity(model: nn.Module, tokens: torch.Tensor, seq_len: int = 2048, batch_size: int = 1,
               max_windows: int | None = None, bos_token_id: int | None = None,
               device: torch.device | str | None = None, progress: bool = False) -> dict:
    """exp(mean NLL) over every predicted token of every window; logits and loss in fp32."""
    w = windows(tokens, seq_len, max_windows, bos_token_id)
    if device is None:
        device = next(model.parameters()).device
    nll, count = 0.0, 0
    t0 = time.time()
    model.eval()
    for i in tqdm(range(0, w.shape[0], batch_size), desc="perplexity", disable=not progress, leave=False):
        x = w[i : i + batch_size].to(device)
        out = model(input_ids=x, use_cache=False)
        logits = out.logits[:, :-1].float()
        target = x[:, 1:]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum")
        nll += float(loss.double())
        count += target.numel()
    mean = nll / count
    return {
        "perplexity": math.exp(mean),
        "nll": mean,
        "tokens_scored": count,
        "windows": int(w.shape[0]),
        "seq_len": seq_len,
        "bos": bos_token_id is not None,
        "seconds": round(time.time() - t0, 2),
    }
