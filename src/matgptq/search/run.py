"""``matgptq.search_bits``: find per-layer widths for a memory budget and store them as a profile.

Everything that can be checked is checked before the model is loaded: the checkpoint, the
levels, the target against the budget, the schedule and the calibration source.
"""

from __future__ import annotations

import hashlib
import logging
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..checkpoint import fingerprint as _fingerprint
from ..checkpoint import group_overhead_bits, open_checkpoint
from .budget import Budget, Layer, check_levels, group_layers
from .evolution import EvoConfig, check_init, evolve, rng_for
from .fitness import KLFitness
from .greedy import greedy, knapsack, sensitivities
from .profiles import profile_name, profile_size, store_profile

log = logging.getLogger("matgptq")
METHODS = ("evolution", "knapsack", "greedy")


@dataclass
class SearchResult:
    name: str
    method: str
    target_bits: float
    layer_bits: dict[str, int]
    average_bits: float  # budget measure (codes, + scales/zeros if counted)
    fitness: float  # KL of the result (last-stage minibatch, or the sensitivity minibatch)
    generations: int = 0
    evaluations: int = 0
    seconds_per_generation: float | None = None
    history: list[dict] = field(default_factory=list)
    sensitivity: np.ndarray | None = None
    checkpoint: Path | None = None
    state_path: Path | None = None
    size: dict[str, float] = field(default_factory=dict)


def budget_for(checkpoint, target_bits: float, levels: Sequence[int] | None = None,
               count_scales: bool = False) -> Budget:
    """The budget over a checkpoint's quantized linears, from tensor headers only."""
    ck = checkpoint if hasattr(checkpoint, "headers") else open_checkpoint(checkpoint)
    meta, h = ck.meta, ck.headers
    lv = check_levels(levels, meta.config.master_bits)
    layers = []
    for m in ck.modules:
        layers.append(Layer(m, tuple(h[f"{m}.qweight"]["shape"]), group_overhead_bits(h, m, meta.config.sym)))
    return Budget(layers, lv, target_bits, count_scales)


def search_bits(
    checkpoint: str | os.PathLike,
    target_bits: float,
    *,
    method: str = "evolution",
    levels: Sequence[int] | None = None,
    count_scales: bool = False,
    group_by_shape: bool = True,
    generations: int = 100,
    offspring: int = 32,
    survivors: Sequence[int] = (8, 2, 1),
    tokens: Sequence[int] = (2048, 8192, 32768),
    max_mutations: int = 1,
    sensitivity_tokens: int = 2048,
    sensitivity: np.ndarray | None = None,
    topk: int = 256,
    calibration: str | torch.Tensor = "sotu",
    num_samples: int = 128,
    seq_len: int = 2048,
    seed: int = 0,
    reference: str | os.PathLike | nn.Module | None = None,
    model: nn.Module | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 1,
    name: str | None = None,
    save: bool = True,
    state_path: str | os.PathLike | None = None,
    resume: bool = True,
    on_candidate: Callable[[dict[str, int]], None] | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    init: str | dict[str, int] | None = None,
) -> SearchResult:
    """Per-layer slice widths with average bits ≤ ``target_bits`` that minimise KL to full precision.

    ``method``: ``"evolution"`` (EvoPress, METHOD §5) or the baselines ``"knapsack"`` / ``"greedy"``
    over per-layer sensitivities. ``levels``: widths to choose from (default 2,3,4,6,8, capped at
    the master width). ``count_scales``: the budget counts scales (+ zeros) too. ``tokens`` /
    ``survivors``: the multi-stage selection (calibration tokens per stage, candidates kept).
    ``reference``: full-precision model (folder or module) for the KL targets; default: the
    checkpoint at its master width. ``calibration``: a source name (never the evaluation text) or
    token ids [n, seq_len]. ``model``: an already loaded ``matgptq.load`` model of this checkpoint.
    The result is stored in the checkpoint as profile ``name`` (default: the target, e.g. "3.25")
    unless ``save=False``; the evolution resumes from ``state_path`` (default: a hidden file in the
    checkpoint folder) when re-run with the same settings. ``init``: start the evolution from a
    stored profile (name) or a {module: bits} map instead of the near-uniform assignment.
    """
    from ..api import _resolve_device, load
    from ..data import CalibrationSpec, calibration_tokens

    # -- checks before long work ------------------------------------------------------------------
    if method not in METHODS:
        raise ValueError(f"method={method!r}; use one of {', '.join(METHODS)}")
    ck = open_checkpoint(checkpoint)
    budget = budget_for(ck, target_bits, levels, count_scales)
    groups = group_layers(budget.layers, "shape" if group_by_shape else "none")
    cfg = EvoConfig(generations=generations, offspring=offspring, survivors=tuple(survivors), tokens=tuple(tokens),
                    max_mutations=max_mutations, seed=seed)
    if method == "evolution":
        cfg.check()
    if int(topk) < 1:
        raise ValueError(f"topk={topk} must be >= 1")
    spec = None
    if isinstance(calibration, torch.Tensor):
        if calibration.dim() != 2 or calibration.dtype not in (torch.int64, torch.int32) or calibration.numel() == 0:
            raise ValueError("calibration token ids must be a non-empty integer tensor [num_samples, seq_len]")
        n_pool, pool_len = calibration.shape
    else:
        spec = CalibrationSpec(calibration, num_samples, seq_len, seed)
        spec.check()
        n_pool, pool_len = num_samples, seq_len
    if method == "evolution":
        from .evolution import stage_sequences

        stage_sequences(cfg, n_pool, pool_len)
    init_bits = None
    if init is not None:
        from .profiles import profile_bits

        imap = profile_bits(ck.model_config, init, ck.modules, ck.meta.config.master_bits) if isinstance(init, str) \
            else {k: int(v) for k, v in init.items()}
        missing = sorted(set(ck.modules) - set(imap))
        if missing:
            raise ValueError(f"init map misses layers {missing[:3]}; give a width for every quantized layer")
        init_bits = budget.from_map(imap)
        check_init(budget, init_bits)  # before any model is loaded
    name = str(name) if name else (profile_name(target_bits) if method == "evolution" else
                                   f"{profile_name(target_bits)}-{method}")
    device = _resolve_device(device)

    # -- model, reference, calibration pool --------------------------------------------------------
    if model is None:
        model = load(ck.path, bits=budget.levels[-1], device=device)
    elif not hasattr(model, "matgptq"):
        raise ValueError("model= must be a model returned by matgptq.load() for this checkpoint")
    ref_label = "master width"
    if isinstance(reference, (str, os.PathLike)):
        from ..models.loading import load_float_model

        ref_label = str(reference)
        reference, _ = load_float_model(reference)
        reference = reference.to(device).eval()
    elif isinstance(reference, nn.Module):
        ref_label = type(reference).__name__
    if spec is not None:
        from transformers import AutoTokenizer

        pool = calibration_tokens(AutoTokenizer.from_pretrained(ck.path), spec)
        calib_meta = spec.to_dict()
    else:
        pool = calibration.long()
        calib_meta = {"source": "token ids", "num_samples": int(pool.shape[0]), "seq_len": int(pool.shape[1])}
    vocab = model.get_output_embeddings().weight.shape[0]
    if int(pool.max()) >= vocab:
        raise ValueError(f"calibration token ids reach {int(pool.max())}, outside the vocabulary of {vocab}")
    fit = KLFitness(model, [layer.name for layer in budget.layers], pool, reference=reference, topk=topk,
                    device=device, batch_size=batch_size)
    start_bits = fit.current()
    settings = {"levels": list(budget.levels), "count_scales": budget.count_overhead, "topk": int(topk),
                "reference": ref_label, "calibration": calib_meta, "seed": seed}

    t0 = time.time()
    table = None
    try:
        if method == "evolution":
            settings.update(group_rule="shape" if group_by_shape else "none", generations=cfg.generations,
                            offspring=cfg.offspring, survivors=list(cfg.survivors), tokens=list(cfg.tokens),
                            max_mutations=cfg.max_mutations)
            pool_hash = hashlib.sha256(pool.numpy().astype(np.int64).tobytes()).hexdigest()
            fp = _fingerprint({"modules": [(x.name, x.shape) for x in budget.layers],
                               "quant": ck.meta.config.to_dict(), "target": budget.target, "pool": pool_hash,
                               "init": list(init_bits) if init_bits else None,
                               **{k: v for k, v in settings.items() if k != "generations"}})
            settings["init"] = init if isinstance(init, str) else ("map" if init is not None else "near-uniform")
            state_path = Path(state_path) if state_path else ck.path / f".search-{name}.state.json"
            hook = None
            if on_candidate is not None:
                hook = lambda c: on_candidate(budget.as_map(c))  # noqa: E731
            state = evolve(budget, fit, cfg, groups=groups, pool_size=int(pool.shape[0]), seq_len=int(pool.shape[1]),
                           fingerprint=fp, state_path=state_path, resume=resume, on_candidate=hook,
                           stop_after=stop_after, progress=progress, init=init_bits)
            bits, fitness = tuple(state.parent), state.fitness
            secs = [h["seconds"] for h in state.history]
            result = SearchResult(name, method, budget.target, budget.as_map(bits), budget.average_bits(bits),
                                  fitness, state.generation, state.evaluations,
                                  statistics.median(secs) if secs else None, state.history, None, ck.path, state_path)
            settings["seconds_per_generation"] = result.seconds_per_generation
        else:
            n_seq = max(1, -(-int(sensitivity_tokens) // int(pool.shape[1])))
            if n_seq > pool.shape[0]:
                raise ValueError(f"sensitivity_tokens={sensitivity_tokens} needs {n_seq} sequences; the pool holds "
                                 f"{pool.shape[0]}")
            idx = sorted(int(i) for i in rng_for(seed, -2).choice(pool.shape[0], size=n_seq, replace=False))
            top = [budget.levels[-1]] * len(budget.layers)

            def losses(changes: list[dict[int, int]]) -> list[float]:
                cands = []
                for ch in changes:
                    bits = list(top)
                    for i, b in ch.items():
                        bits[i] = b
                    if on_candidate is not None:
                        on_candidate(budget.as_map(bits))
                    cands.append(bits)
                return fit(cands, idx)

            table = sensitivities(budget, losses, progress) if sensitivity is None else np.asarray(sensitivity)
            bits = (knapsack if method == "knapsack" else greedy)(budget, table)
            if on_candidate is not None:
                on_candidate(budget.as_map(bits))
            result = SearchResult(name, method, budget.target, budget.as_map(bits), budget.average_bits(bits),
                                  fit.loss(bits, idx), sensitivity=table, checkpoint=ck.path)
            settings["sensitivity_tokens"] = n_seq * int(pool.shape[1])
    finally:
        fit.apply(start_bits)
    result.size = profile_size(ck.headers, ck.meta.config.sym, result.layer_bits)
    settings["seconds"] = round(time.time() - t0, 2)
    if save and (method != "evolution" or result.generations >= cfg.generations):
        record = {"layer_bits": result.layer_bits, "target_bits": budget.target, "method": method,
                  "budget_bits": round(result.average_bits, 6), "fitness": result.fitness,
                  **result.size, "search": settings, "library_version": __version__}
        store_profile(ck.path, name, record, ck.modules, ck.meta.config.master_bits)
        log.info("stored profile %r in %s (%.4f bits/weight)", name, ck.path, result.average_bits)
    return result


def result_dict(r: SearchResult) -> dict[str, Any]:
    d = asdict(r)
    d.pop("sensitivity")
    d["checkpoint"] = str(r.checkpoint) if r.checkpoint else None
    d["state_path"] = str(r.state_path) if r.state_path else None
    return d
