"""EvoPress-style (1+λ) evolutionary search over per-layer slice widths (METHOD §5). Pure logic.

Each generation makes λ offspring of the parent by *level switches* that keep the budget: lower
one layer by one level and raise another layer of the same group by one level (groups: layers of
one shape, unless told otherwise); a switch whose result exceeds the budget is redrawn. The parent
and its offspring then go through a multi-stage selection: stage s draws a fresh random minibatch
of ``tokens[s]`` calibration tokens, scores every remaining candidate on it and keeps the best
``survivors[s]``; the winner of the last stage is the next parent (elitist: the parent competes).

Fitness is anything that scores candidates on a minibatch (``evaluate(candidates, sequence
indices) -> losses``, lower is better); here it is the KL of :mod:`.fitness`. Every random draw
comes from a generator seeded with (seed, generation), so a fixed seed gives the same result and a
run resumed from its state file (written atomically after every generation) equals an
uninterrupted one.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..checkpoint.atomic import write_json
from .budget import Budget

Candidate = tuple[int, ...]
Evaluate = Callable[[list[Candidate], list[int]], list[float]]
STATE_FORMAT = "matgptq-search-state"


@dataclass
class EvoConfig:
    """Published EvoPress settings: 64 offspring, survivors 16/4/1 on 2k/16k/131k tokens, 250
    generations. The defaults are smaller."""

    generations: int = 100
    offspring: int = 32
    survivors: tuple[int, ...] = (8, 2, 1)
    tokens: tuple[int, ...] = (2048, 8192, 32768)
    max_mutations: int = 1  # level switches per offspring, drawn uniformly from 1..max_mutations
    seed: int = 0

    def __post_init__(self):
        self.survivors = tuple(int(s) for s in self.survivors)
        self.tokens = tuple(int(t) for t in self.tokens)

    def check(self) -> None:
        if self.generations < 0:
            raise ValueError(f"generations={self.generations} must be >= 0")
        if self.offspring < 1:
            raise ValueError(f"offspring={self.offspring} must be >= 1")
        if not self.tokens or len(self.tokens) != len(self.survivors):
            raise ValueError(f"tokens per stage {list(self.tokens)} and survivors per stage {list(self.survivors)} "
                             "must be non-empty lists of the same length, e.g. tokens 2048,16384 survivors 4,1")
        if any(t < 1 for t in self.tokens) or any(s < 1 for s in self.survivors):
            raise ValueError("tokens and survivors per stage must be positive")
        if list(self.survivors) != sorted(self.survivors, reverse=True) or self.survivors[-1] != 1:
            raise ValueError(f"survivors per stage {list(self.survivors)} must shrink to 1 in the last stage, e.g. 16,4,1")
        if self.max_mutations < 1:
            raise ValueError(f"max_mutations={self.max_mutations} must be >= 1")


@dataclass
class EvoState:
    fingerprint: str
    generation: int = 0  # generations finished
    parent: list[int] = field(default_factory=list)
    fitness: float | None = None  # the parent's loss in the last stage of its generation
    evaluations: int = 0  # candidate evaluations (each on one stage minibatch)
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"format": STATE_FORMAT, **asdict(self)}


def rng_for(seed: int, generation: int) -> np.random.Generator:
    """Generator of one generation (negative ``generation``: other uses, e.g. -1 = the initial candidate)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(generation) % 2**32, 0x5EA4C4]))


def initial_candidate(budget: Budget, rng: np.random.Generator) -> Candidate:
    """Every layer at the highest level that fits uniformly, then random one-level raises while they fit."""
    levels = budget.levels
    n = len(budget.layers)
    bits = [budget.uniform_floor()] * n
    pos = {b: i for i, b in enumerate(levels)}
    cost = budget.cost(bits)
    for i in rng.permutation(n):
        k = pos[bits[i]]
        if k + 1 < len(levels):
            extra = budget.layers[i].numel * (levels[k + 1] - levels[k])
            if cost + extra <= budget.limit:
                bits[i] = levels[k + 1]
                cost += extra
    return tuple(bits)


def mutate(parent: Sequence[int], budget: Budget, groups: list[list[int]], rng: np.random.Generator,
           switches: int = 1, tries: int = 100) -> Candidate:
    """``switches`` level switches (lower layer j one level, raise i in j's group one level), each
    kept only if the result fits the budget."""
    levels = budget.levels
    pos = {b: i for i, b in enumerate(levels)}
    group_of = {i: g for g in groups if len(g) > 1 for i in g}
    child = list(parent)
    done = 0
    for _ in range(tries * switches):
        if done == switches:
            break
        lowerable = [j for j in group_of if pos[child[j]] > 0]
        if not lowerable:
            break
        j = lowerable[int(rng.integers(len(lowerable)))]
        raisable = [i for i in group_of[j] if i != j and pos[child[i]] + 1 < len(levels)]
        if not raisable:
            continue
        i = raisable[int(rng.integers(len(raisable)))]
        trial = list(child)
        trial[j] = levels[pos[child[j]] - 1]
        trial[i] = levels[pos[child[i]] + 1]
        if budget.fits(trial):
            child = trial
            done += 1
    return tuple(child)


def stage_sequences(cfg: EvoConfig, pool_size: int, seq_len: int) -> list[int]:
    """Sequences drawn per stage (ceil(tokens / seq_len)), checked against the pool."""
    out = []
    for t in cfg.tokens:
        n = max(1, math.ceil(t / seq_len))
        if n > pool_size:
            raise ValueError(f"a stage of {t} tokens needs {n} calibration sequences of {seq_len} but the pool "
                             f"holds {pool_size}; raise the number of calibration samples or lower the stage tokens")
        out.append(n)
    return out


def load_state(path: Path, fingerprint: str) -> EvoState | None:
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"search state file {path} is corrupt ({e}); delete it to start over") from None
    if d.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a matgptq search state file; delete it or choose another state path")
    if d.get("fingerprint") != fingerprint:
        raise ValueError(f"search state file {path} belongs to a search with other settings (checkpoint, target, "
                         "levels, seed, data or schedule); delete it, pass resume=False (--no-resume), or choose "
                         "another state path")
    d.pop("format")
    return EvoState(**d)


def check_init(budget: Budget, init: Sequence[int]) -> None:
    """A starting candidate must fit the budget and use only the budget's levels."""
    if not budget.fits(init):
        raise ValueError(f"init has {budget.average_bits(init):.4f} bits per weight, over the target "
                         f"{budget.target:g}; start from a profile made for this target or lower")
    if any(b not in budget.levels for b in init):
        raise ValueError(f"init uses widths {sorted(set(init) - set(budget.levels))} outside the levels "
                         f"{list(budget.levels)}; add them to levels= (--levels) or start from another profile")


def evolve(budget: Budget, evaluate: Evaluate, cfg: EvoConfig, *, groups: list[list[int]], pool_size: int,
           seq_len: int, fingerprint: str = "", state_path: str | Path | None = None, resume: bool = True,
           on_candidate: Callable[[Candidate], None] | None = None, stop_after: int | None = None,
           progress: bool = True, init: Sequence[int] | None = None) -> EvoState:
    """Run (or resume) the search; returns the state with the best candidate as ``parent``.

    ``init``: the first parent (default: :func:`initial_candidate`, near-uniform)."""
    cfg.check()
    if not any(len(g) > 1 for g in groups):
        raise ValueError("no two layers share a group (shape), so no level switch keeps the budget; "
                         "use the group rule 'none' (--no-group-by-shape)")
    plan = stage_sequences(cfg, pool_size, seq_len)
    state_path = Path(state_path) if state_path else None
    state = load_state(state_path, fingerprint) if (state_path and resume) else None
    if init is not None:
        check_init(budget, init)
    if state is None:
        first = init if init is not None else initial_candidate(budget, rng_for(cfg.seed, -1))
        state = EvoState(fingerprint, parent=[int(b) for b in first])
    bar = tqdm(total=cfg.generations, initial=min(state.generation, cfg.generations), desc="search",
               disable=not progress, dynamic_ncols=True)
    if state.fitness is not None:
        bar.set_postfix(kl=f"{state.fitness:.5f}", bits=f"{budget.average_bits(state.parent):.3f}")
    ran = 0
    try:
        while state.generation < cfg.generations and (stop_after is None or ran < stop_after):
            t0 = time.perf_counter()
            rng = rng_for(cfg.seed, state.generation)
            parent = tuple(state.parent)
            cands: list[Candidate] = [parent]
            for _ in range(cfg.offspring):
                child = mutate(parent, budget, groups, rng, int(rng.integers(1, cfg.max_mutations + 1)))
                if child not in cands:
                    cands.append(child)
            scores: list[float] = []
            for n_seq, keep in zip(plan, cfg.survivors):
                idx = sorted(int(i) for i in rng.choice(pool_size, size=n_seq, replace=False))
                for c in cands:
                    if not budget.fits(c):  # cannot happen: every mutation is checked
                        raise RuntimeError(f"candidate over budget: {budget.average_bits(c):.4f} bits")
                    if on_candidate is not None:
                        on_candidate(c)
                scores = [float(s) for s in evaluate(cands, idx)]
                state.evaluations += len(cands)
                order = sorted(range(len(cands)), key=lambda k: (scores[k], k))[:keep]
                cands, scores = [cands[k] for k in order], [scores[k] for k in order]
            state.parent, state.fitness = list(cands[0]), scores[0]
            state.generation += 1
            ran += 1
            state.history.append({"generation": state.generation, "fitness": state.fitness,
                                  "average_bits": budget.average_bits(cands[0]),
                                  "seconds": round(time.perf_counter() - t0, 3)})
            if state_path is not None:
                write_json(state_path, state.to_dict())
            bar.update(1)
            bar.set_postfix(kl=f"{state.fitness:.5f}", bits=f"{budget.average_bits(cands[0]):.3f}")
    finally:
        bar.close()
    return state
