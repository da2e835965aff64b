"""Mix'n'Match: per-layer slice widths under a memory budget (METHOD §5).

- :mod:`.budget`: levels, costs, the budget check, layer groups (pure)
- :mod:`.kl`: top-k sparse KL in fp32 (pure)
- :mod:`.evolution`: the EvoPress loop, state file and resume (pure)
- :mod:`.greedy`: sensitivity table + knapsack / greedy baseline (pure)
- :mod:`.fitness`: KL of a loaded model whose resident layers switch width in place
- :mod:`.profiles`: named profiles in the checkpoint's config.json
- :mod:`.run`: :func:`search_bits`, the API behind ``matgptq search``
"""

from .budget import DEFAULT_LEVELS, Budget, Layer, check_levels, group_layers
from .evolution import EvoConfig, evolve
from .greedy import greedy, knapsack
from .kl import SparseTargets, dense_kl, sparse_kl, topk_targets
from .profiles import list_profiles, profile_bits, store_profile

__all__ = [
    "DEFAULT_LEVELS", "Budget", "Layer", "check_levels", "group_layers", "EvoConfig", "evolve", "greedy",
    "knapsack", "SparseTargets", "dense_kl", "sparse_kl", "topk_targets", "list_profiles", "profile_bits",
    "store_profile", "search_bits",
]


def __getattr__(name):
    if name == "search_bits":
        from .run import search_bits

        return search_bits
    raise AttributeError(name)
