"""Mix'n'Match pure logic: budget, levels, groups, sparse KL, knapsack/greedy, evolution (no models)."""

import itertools
import json
import math

import numpy as np
import pytest
import torch

from matgptq.search import Budget, EvoConfig, Layer, check_levels, dense_kl, evolve, greedy, group_layers, knapsack
from matgptq.search.evolution import initial_candidate, mutate, rng_for
from matgptq.search.kl import sparse_kl, topk_targets

SHAPES = [(64, 64), (32, 64), (32, 64), (64, 64), (128, 64), (128, 64), (64, 128)] * 3
LAYERS = [Layer(f"l{i}", s, overhead_bits=(s[0] * s[1] // 32) * 16 + (s[0] * s[1] // 32) * 8) for i, s in enumerate(SHAPES)]


def _fake_loss(weights):
    """A deterministic synthetic fitness: weighted per-layer errors 4^-bits + minibatch noise."""
    def evaluate(cands, idx):
        noise = 1e-4 * (sum(idx) % 7)
        return [float(sum(w * 4.0 ** -b for w, b in zip(weights, c))) + noise for c in cands]
    return evaluate


# -- levels and budget ---------------------------------------------------------------------------
def test_levels():
    assert check_levels(None, 8) == (2, 3, 4, 6, 8)
    assert check_levels(None, 6) == (2, 3, 4, 6)
    assert check_levels(None, 5) == (2, 3, 4, 5)
    assert check_levels([4, 2, 3, 3], 8) == (2, 3, 4)
    with pytest.raises(ValueError, match=r"levels \[9\] cannot be served.*2..8"):
        check_levels([2, 9], 8)
    with pytest.raises(ValueError, match="at least two"):
        check_levels([3], 8)


def test_budget_bounds_and_costs():
    b = Budget(LAYERS, (2, 3, 4, 6, 8), 3.25)
    n = b.total_numel
    assert b.limit == math.floor(3.25 * n)
    assert b.cost([3] * len(LAYERS)) == 3 * n and b.fits([3] * len(LAYERS))
    assert not b.fits([4] * len(LAYERS))
    assert b.uniform_floor() == 3
    with pytest.raises(ValueError, match=r"target 1.5 bits per weight is below the lowest level.*>= 2.0000"):
        Budget(LAYERS, (2, 3, 4), 1.5)
    with pytest.raises(ValueError, match=r"target 9 bits per weight is above the highest level.*<= 8.0000"):
        Budget(LAYERS, (2, 3, 4, 6, 8), 9)
    with pytest.raises(ValueError, match="not a number"):
        Budget(LAYERS, (2, 3), "abc")
    # with scales + zeros counted, 2.5 bits is the floor (16-bit scale + 8-bit zero per 32 weights = 0.75)
    bo = Budget(LAYERS, (2, 3, 4, 6, 8), 3.25, count_overhead=True)
    assert bo.cost([2] * len(LAYERS)) == 2.75 * n
    assert bo.uniform_floor() == 2
    with pytest.raises(ValueError, match=r"codes \+ scales.*below the lowest level.*2.7500"):
        Budget(LAYERS, (2, 3), 2.5, count_overhead=True)


def test_group_by_shape():
    groups = group_layers(LAYERS, "shape")
    assert sorted(len(g) for g in groups) == [3, 6, 6, 6]
    for g in groups:
        assert len({LAYERS[i].shape for i in g}) == 1
    assert group_layers(LAYERS, "none") == [list(range(len(LAYERS)))]
    with pytest.raises(ValueError, match="'shape' or 'none'"):
        group_layers(LAYERS, "size")


# -- (1) budget invariant for every candidate ever evaluated -----------------------------------------
@pytest.mark.parametrize("count_overhead", [False, True])
@pytest.mark.parametrize("rule", ["shape", "none"])
def test_every_candidate_fits_the_budget(count_overhead, rule):
    rng = np.random.default_rng(0)
    weights = rng.uniform(0.1, 10, len(LAYERS))
    targets = (2.9, 3.25, 4.6) if count_overhead else (2.0, 2.5, 3.0, 3.7, 5.1, 8.0)
    for target, seed in itertools.product(targets, (0, 1, 2)):
        budget = Budget(LAYERS, (2, 3, 4, 6, 8), target, count_overhead)
        seen = []
        cfg = EvoConfig(generations=6, offspring=12, survivors=(4, 1), tokens=(2, 4), max_mutations=3, seed=seed)
        state = evolve(budget, _fake_loss(weights), cfg, groups=group_layers(LAYERS, rule), pool_size=8, seq_len=1,
                       on_candidate=seen.append, progress=False)
        assert len(seen) >= (6 * 2 if target in (2.0, 8.0) else 6 * 5)  # at the extremes only the parent
        bad = [c for c in seen if budget.cost(c) > target * budget.total_numel]
        assert not bad, f"target {target}: {len(bad)} candidates over budget"
        assert budget.fits(state.parent)


def test_mutation_is_a_level_switch_within_a_shape_group():
    budget = Budget(LAYERS, (2, 3, 4, 6, 8), 3.5)
    groups = group_layers(LAYERS, "shape")
    parent = initial_candidate(budget, rng_for(0, -1))
    assert budget.fits(parent) and budget.average_bits(parent) > 3.3  # filled close to the budget
    for s in range(50):
        child = mutate(parent, budget, groups, rng_for(s, 0), 1)
        diff = [i for i in range(len(parent)) if child[i] != parent[i]]
        assert len(diff) == 2 and LAYERS[diff[0]].shape == LAYERS[diff[1]].shape
        assert sorted(np.sign([child[i] - parent[i] for i in diff])) == [-1, 1]


# -- (2) sparse top-k KL against the dense float64 oracle ------------------------------------------
def test_sparse_kl_equals_dense_at_full_k_and_bounds_it_below():
    g = torch.Generator().manual_seed(0)
    V = 97
    p = torch.randn(40, V, generator=g, dtype=torch.float64) * 3
    q = p + torch.randn(40, V, generator=g, dtype=torch.float64) * 0.7
    oracle = dense_kl(p, q)  # float64
    full = sparse_kl(topk_targets(p.float(), V), q.float())  # fp32 path
    assert full.dtype == torch.float32
    torch.testing.assert_close(full.double(), oracle, rtol=1e-4, atol=1e-6)
    exact64 = sparse_kl(topk_targets(p, V), q)
    torch.testing.assert_close(exact64, oracle, rtol=1e-10, atol=1e-12)
    prev = torch.zeros(40, dtype=torch.float64)
    for k in (1, 4, 16, 64, 96, 97):
        kl_k = sparse_kl(topk_targets(p, k), q)
        assert torch.all(kl_k >= -1e-12) and torch.all(kl_k <= oracle + 1e-12)  # 0 <= KL_k <= KL
        assert torch.all(kl_k >= prev - 1e-12)  # grows with k
        prev = kl_k
    # a peaked target: the top 8 hold nearly all mass and KL_8 is within 1% of the full KL
    peaked = p * 4
    kl8 = sparse_kl(topk_targets(peaked, 8), q).sum()
    assert kl8 <= dense_kl(peaked, q).sum() and kl8 >= 0.99 * dense_kl(peaked, q).sum()


def test_sparse_kl_identical_distributions_is_zero():
    p = torch.randn(5, 50)
    assert torch.allclose(sparse_kl(topk_targets(p, 10), p), torch.zeros(5), atol=1e-6)
    assert torch.allclose(sparse_kl(topk_targets(p, 50), p), torch.zeros(5), atol=1e-6)


# -- (3) knapsack and greedy against exhaustive search ---------------------------------------------
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("count_overhead", [False, True])
def test_knapsack_is_optimal_on_a_tiny_instance(seed, count_overhead):
    rng = np.random.default_rng(seed)
    shapes = [(8, 16), (16, 16), (8, 16), (16, 32), (4, 16), (16, 16)]
    layers = [Layer(f"l{i}", s, overhead_bits=s[0] * 16) for i, s in enumerate(shapes)]
    levels = (2, 3, 4, 8)
    # a loss that falls with bits, different per layer
    table = np.sort(rng.exponential(1.0, (len(layers), len(levels))), axis=1)[:, ::-1].copy()
    table[:, -1] = 0.0
    for target in (2.3, 3.0, 3.6, 5.0):
        budget = Budget(layers, levels, target + (1.0 if count_overhead else 0), count_overhead)
        best = min((sum(table[i, levels.index(b)] for i, b in enumerate(c)), c)
                   for c in itertools.product(levels, repeat=len(layers)) if budget.fits(c))
        got = knapsack(budget, table)
        assert budget.fits(got)
        value = sum(table[i, levels.index(b)] for i, b in enumerate(got))
        assert value == pytest.approx(best[0], abs=1e-12)
        g = greedy(budget, table)
        assert budget.fits(g)
        assert sum(table[i, levels.index(b)] for i, b in enumerate(g)) >= best[0] - 1e-12


# -- (4) same seed, same result; (5) resume equals uninterrupted -------------------------------------
def test_same_seed_same_result_and_different_seed_differs():
    weights = np.random.default_rng(3).uniform(0.1, 10, len(LAYERS))
    budget = Budget(LAYERS, (2, 3, 4, 6, 8), 3.0)
    cfg = lambda s: EvoConfig(generations=15, offspring=8, survivors=(3, 1), tokens=(2, 4), seed=s)  # noqa: E731
    run = lambda s: evolve(budget, _fake_loss(weights), cfg(s), groups=group_layers(LAYERS), pool_size=8,  # noqa: E731
                           seq_len=1, progress=False)
    a, b, c = run(0), run(0), run(1)
    assert a.parent == b.parent and a.fitness == b.fitness
    assert [h["fitness"] for h in a.history] == [h["fitness"] for h in b.history]
    assert a.parent != c.parent
    # elitism: the last-stage fitness of the parent never rises on the same data (fake loss noise aside)
    uniform = _fake_loss(weights)([tuple([3] * len(LAYERS))], [0])[0]
    assert a.fitness < uniform


def test_resume_from_state_file_equals_uninterrupted(tmp_path):
    weights = np.random.default_rng(4).uniform(0.1, 10, len(LAYERS))
    budget = Budget(LAYERS, (2, 3, 4, 6, 8), 2.5)
    cfg = EvoConfig(generations=12, offspring=8, survivors=(3, 1), tokens=(2, 4), seed=5)
    kw = dict(groups=group_layers(LAYERS), pool_size=8, seq_len=1, fingerprint="fp", progress=False)
    full = evolve(budget, _fake_loss(weights), cfg, **kw)
    path = tmp_path / "state.json"
    part = evolve(budget, _fake_loss(weights), cfg, state_path=path, stop_after=5, **kw)
    assert part.generation == 5 and json.loads(path.read_text())["generation"] == 5
    resumed = evolve(budget, _fake_loss(weights), cfg, state_path=path, **kw)
    assert resumed.generation == 12
    assert resumed.parent == full.parent and resumed.fitness == full.fitness
    assert [h["fitness"] for h in resumed.history] == [h["fitness"] for h in full.history]
    # a finished state resumes to itself without evaluating anything
    again = evolve(budget, lambda c, i: pytest.fail("evaluated"), cfg, state_path=path, **kw)
    assert again.parent == full.parent
    with pytest.raises(ValueError, match="other settings.*delete it"):
        evolve(budget, _fake_loss(weights), cfg, state_path=path, **{**kw, "fingerprint": "other"})


def test_schedule_checks():
    budget = Budget(LAYERS, (2, 3, 4), 3.0)
    with pytest.raises(ValueError, match="shrink to 1"):
        evolve(budget, _fake_loss([1] * len(LAYERS)), EvoConfig(survivors=(4, 2), tokens=(2, 4)),
               groups=group_layers(LAYERS), pool_size=8, seq_len=1, progress=False)
    with pytest.raises(ValueError, match="pool holds 8"):
        evolve(budget, _fake_loss([1] * len(LAYERS)), EvoConfig(survivors=(4, 1), tokens=(2, 40)),
               groups=group_layers(LAYERS), pool_size=8, seq_len=1, progress=False)
    single = [Layer("a", (4, 4)), Layer("b", (4, 8))]
    with pytest.raises(ValueError, match="no-group-by-shape"):
        evolve(Budget(single, (2, 3), 2.5), _fake_loss([1, 1]), EvoConfig(survivors=(1,), tokens=(1,)),
               groups=group_layers(single), pool_size=2, seq_len=1, progress=False)
