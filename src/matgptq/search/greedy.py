"""The baseline: per-layer sensitivities and an allocation under the same budget (pure logic).

``table[l, k]`` is the loss (KL) of the model with layer ``l`` alone at ``levels[k]`` and every
other layer at the highest level; the allocation minimises the additive proxy Σ_l table[l, b_l]
subject to the budget.

- :func:`knapsack`: exact multiple-choice knapsack by dynamic programming over integer costs
  (costs are divided by the gcd of the layer sizes; if the table would still be too large they
  are rounded *up* to a coarser grid, which keeps the result within budget).
- :func:`greedy`: start with every layer at the highest level and repeatedly lower the layer
  whose next step down adds the least loss per bit saved, until the budget holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import reduce

import numpy as np
from tqdm.auto import tqdm

from .budget import Budget

MAX_CELLS = 4_000_000


def sensitivities(budget: Budget, losses: Callable[[list[dict[int, int]]], list[float]], progress: bool = True,
                  chunk: int = 8) -> np.ndarray:
    """[layers, levels] losses. ``losses([{layer index: bits}, ...])`` scores each change (those
    layers changed, all others at the highest level); it is called with the unchanged model first
    in every batch, so an evaluator can reuse its computation. The highest-level column is the
    base loss."""
    n, levels = len(budget.layers), budget.levels
    table = np.empty((n, len(levels)), dtype=np.float64)
    jobs = [(i, k) for i in range(n) for k in range(len(levels) - 1)]
    per = max(1, chunk * (len(levels) - 1))
    with tqdm(total=len(jobs), desc="sensitivity", disable=not progress, dynamic_ncols=True) as bar:
        for s in range(0, len(jobs), per):
            part = jobs[s: s + per]
            vals = losses([{}] + [{i: levels[k]} for i, k in part])
            table[:, -1] = vals[0]
            for (i, k), v in zip(part, vals[1:]):
                table[i, k] = v
            bar.update(len(part))
    return table


def _check(budget: Budget, table: np.ndarray) -> np.ndarray:
    table = np.asarray(table, dtype=np.float64)
    if table.shape != (len(budget.layers), len(budget.levels)):
        raise ValueError(f"sensitivity table has shape {table.shape}, expected {(len(budget.layers), len(budget.levels))}")
    return table


def knapsack(budget: Budget, table: np.ndarray) -> tuple[int, ...]:
    """The assignment minimising Σ table[l, level] under the budget (exact on integer costs)."""
    table = _check(budget, table)
    levels = np.array(budget.levels, dtype=np.int64)
    numels = [layer.numel for layer in budget.layers]
    g = reduce(math.gcd, numels)
    units = np.array([m // g for m in numels], dtype=np.int64)
    cap = (budget.limit - budget.overhead) // g
    step = 1
    if cap * len(numels) > MAX_CELLS:  # coarser grid, costs rounded up: never over budget
        step = math.ceil(cap * len(numels) / MAX_CELLS)
    w = -(-units[:, None] * levels[None, :] // step)  # [L, K] ceil(cost / step)
    cap = cap // step
    inf = np.inf
    best = np.zeros(cap + 1)  # best[c]: min loss of the layers so far with total weight <= c
    choice = np.zeros((len(numels), cap + 1), dtype=np.int16)
    for i in range(len(numels)):
        new = np.full(cap + 1, inf)
        arg = np.zeros(cap + 1, dtype=np.int16)
        for k in range(len(levels)):
            wk = int(w[i, k])
            if wk > cap:
                continue
            cand = np.full(cap + 1, inf)
            cand[wk:] = best[: cap + 1 - wk] + table[i, k]
            better = cand < new
            new[better] = cand[better]
            arg[better] = k
        best, choice[i] = new, arg
    if not np.isfinite(best[cap]):
        raise ValueError(f"no assignment of the levels fits the budget of {cap} cost units even with every layer at "
                         "its lowest level; raise the target bits or add a lower level")
    out, c = [], cap
    for i in reversed(range(len(numels))):
        k = int(choice[i, c])
        out.append(int(levels[k]))
        c -= int(w[i, k])
    out = tuple(reversed(out))
    assert budget.fits(out)
    return out


def greedy(budget: Budget, table: np.ndarray) -> tuple[int, ...]:
    """Lower the cheapest (loss per bit) layer one level at a time until the budget holds."""
    table = _check(budget, table)
    levels = budget.levels
    k = [len(levels) - 1] * len(budget.layers)
    cost = budget.cost([levels[-1]] * len(k))
    while cost > budget.limit:
        best, pick = (math.inf, -1), None
        for i, layer in enumerate(budget.layers):
            if k[i] == 0:
                continue
            saved = layer.numel * (levels[k[i]] - levels[k[i] - 1])
            ratio = (table[i, k[i] - 1] - table[i, k[i]]) / saved
            if (ratio, i) < best:
                best, pick = (ratio, i), i
        if pick is None:
            raise ValueError("no assignment fits the budget even with every layer at its lowest level; "
                             "raise the target bits or add a lower level")
        cost -= budget.layers[pick].numel * (levels[k[pick]] - levels[k[pick] - 1])
        k[pick] -= 1
    return tuple(levels[j] for j in k)
