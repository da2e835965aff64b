"""The search's fitness on a loaded model: KL(full precision ‖ candidate) on calibration tokens.

Candidates are applied by switching the slice width of the resident :class:`QuantLinear` layers
in place (``set_bits``): no weights are read from disk. Full-precision targets are computed once
per calibration sequence (by a float reference model, or by the checkpoint at its master width)
and kept as top-k log-probs + indices + the log of the remaining mass (:mod:`.kl`). Logits of the
candidate are computed in fp32 (final hidden state · lm_head in fp32) and compared in fp32.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .kl import SparseTargets, sparse_kl, topk_targets


def _fp32_logits(model: nn.Module, ids: torch.Tensor, chunk: int = 1024):
    """Yield fp32 logits [rows, V] of every position of ``ids`` [B, T], ``chunk`` rows at a time."""
    base = model.get_decoder() if hasattr(model, "get_decoder") else model.base_model
    h = base(input_ids=ids, use_cache=False).last_hidden_state
    head = model.get_output_embeddings()
    w = head.weight.float()
    b = None if getattr(head, "bias", None) is None else head.bias.float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    h = h.reshape(-1, h.shape[-1])
    for s in range(0, h.shape[0], chunk):
        logits = F.linear(h[s: s + chunk].float(), w, b)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        yield logits


def _blocks_of(model: nn.Module, names: Sequence[str]) -> tuple[nn.ModuleList, list[int]]:
    """The decoder blocks (the ModuleList that holds the quantized layers) and each layer's block."""
    blocks, prefix, index = None, None, []
    for n in names:
        parts = n.split(".")
        for j in range(1, len(parts)):
            mod = model.get_submodule(".".join(parts[:j]))
            if isinstance(mod, nn.ModuleList) and parts[j].isdigit():
                break
        else:
            raise ValueError(f"quantized layer {n} is not inside a list of decoder blocks; the search scores "
                             "block by block, so search only the layers of the decoder blocks")
        if prefix not in (None, ".".join(parts[:j])):
            raise ValueError(f"quantized layers lie in two block lists ({prefix}, {'.'.join(parts[:j])}); the search "
                             "handles one stack of decoder blocks (e.g. the language model of a multimodal model)")
        prefix, blocks = ".".join(parts[:j]), mod
        index.append(int(parts[j]))
    return blocks, index


class KLFitness:
    """Scores per-layer width assignments by the mean per-token sparse KL on pool sequences."""

    def __init__(self, model: nn.Module, layer_names: Sequence[str], pool: torch.Tensor, *,
                 reference: nn.Module | None = None, topk: int = 256, device: torch.device | str = "cpu",
                 batch_size: int = 1, reuse_prefix: bool = True):
        self.model = model
        self.names = list(layer_names)
        self.layers = [model.get_submodule(n) for n in self.names]
        self.master = [layer.master_bits for layer in self.layers]
        self.pool = pool
        self.reference = reference
        self.topk = int(topk)
        self.device = torch.device(device)
        self.batch_size = max(1, int(batch_size))
        self.targets: dict[int, SparseTargets] = {}
        self.forward_tokens = 0  # block-tokens run through the quantized model, in whole-model units
        self.reuse_prefix = reuse_prefix
        self.blocks, self.block_of = _blocks_of(model, self.names)

    # -- widths -----------------------------------------------------------------------------------
    def current(self) -> tuple[int, ...]:
        return tuple(layer.bits for layer in self.layers)

    def apply(self, bits: Sequence[int]) -> None:
        """Switch resident layers to ``bits`` (only those that change)."""
        for layer, b in zip(self.layers, bits, strict=True):
            if layer.bits != b:
                layer.set_bits(int(b))

    # -- targets ----------------------------------------------------------------------------------
    @torch.no_grad()
    def _targets(self, idx: Sequence[int]) -> list[SparseTargets]:
        missing = [i for i in idx if i not in self.targets]
        if missing:
            ref = self.reference
            saved = None
            if ref is None:  # the checkpoint at its master width stands in for full precision
                saved = self.current()
                self.apply(self.master)
                ref = self.model
            try:
                for i in missing:
                    ids = self.pool[i: i + 1].to(self.device)
                    parts = [topk_targets(lg, self.topk) for lg in _fp32_logits(ref, ids)]
                    self.targets[i] = SparseTargets(torch.cat([p.logp for p in parts]),
                                                    torch.cat([p.index for p in parts]),
                                                    torch.cat([p.log_rest for p in parts]))
            finally:
                if saved is not None:
                    self.apply(saved)
        return [self.targets[i] for i in idx]

    # -- fitness ----------------------------------------------------------------------------------
    def _kl_sum(self, ids: torch.Tensor, tgt: SparseTargets) -> tuple[float, int]:
        total, count, start = 0.0, 0, 0
        for logits in _fp32_logits(self.model, ids):
            n = logits.shape[0]
            part = SparseTargets(tgt.logp[start: start + n], tgt.index[start: start + n], tgt.log_rest[start: start + n])
            total += float(sparse_kl(part, logits).sum(dtype=torch.float64))
            count += n
            start += n
        return total, count

    def loss(self, bits: Sequence[int], idx: Sequence[int]) -> float:
        """Mean per-token KL of the model at ``bits`` over pool sequences ``idx``."""
        return self([bits], idx)[0]

    @torch.no_grad()
    def __call__(self, candidates: Sequence[Sequence[int]], idx: Sequence[int]) -> list[float]:
        """Mean per-token KL of every candidate on pool sequences ``idx``.

        With ``reuse_prefix``, the first candidate runs in full and every block's output is kept;
        a later candidate that first differs from it in block k reuses blocks 0..k-1 (identical
        widths, identical inputs) and runs from block k: the same numbers, less compute.
        """
        cands = [tuple(int(b) for b in c) for c in candidates]
        targets = self._targets(idx)
        totals, counts = [0.0] * len(cands), [0] * len(cands)
        first_diff = [self._first_block(cands[0], c) for c in cands]
        for s in range(0, len(idx), self.batch_size):
            rows = list(idx[s: s + self.batch_size])
            ids = self.pool[rows].to(self.device)
            t = targets[s: s + len(rows)]
            tgt = SparseTargets(torch.cat([x.logp for x in t]), torch.cat([x.index for x in t]),
                                torch.cat([x.log_rest for x in t]))
            cache: list = []
            for j, c in enumerate(cands):
                self.apply(c)
                if j == 0 or not self.reuse_prefix:
                    with self._recording(cache if self.reuse_prefix else None):
                        kl, n = self._kl_sum(ids, tgt)
                    self.forward_tokens += ids.numel()
                else:
                    with self._skipping(cache, first_diff[j]):
                        kl, n = self._kl_sum(ids, tgt)
                    self.forward_tokens += ids.numel() * (len(self.blocks) - first_diff[j]) // max(len(self.blocks), 1)
                totals[j] += kl
                counts[j] += n
        return [tot / max(n, 1) for tot, n in zip(totals, counts)]

    # -- prefix reuse -------------------------------------------------------------------------------
    def _first_block(self, base: tuple[int, ...], cand: tuple[int, ...]) -> int:
        diff = [self.block_of[i] for i, (a, b) in enumerate(zip(base, cand)) if a != b]
        return min(diff) if diff else len(self.blocks)

    @contextmanager
    def _recording(self, cache: list | None):
        if cache is None:
            yield
            return
        cache.clear()
        cache.extend([None] * len(self.blocks))

        def keep(i):
            def hook(module, args, output):
                cache[i] = output
            return hook

        handles = [b.register_forward_hook(keep(i)) for i, b in enumerate(self.blocks)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    @contextmanager
    def _skipping(self, cache: list, first: int):
        """Blocks before ``first`` return their recorded outputs instead of computing."""
        for i in range(first):
            out = cache[i]
            self.blocks[i].forward = lambda *a, _out=out, **k: _out
        try:
            yield
        finally:
            for i in range(first):
                del self.blocks[i].forward
