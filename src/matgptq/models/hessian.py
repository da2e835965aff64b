"""Forward pre-hooks that feed each linear's inputs into a Hessian accumulator.

Layers that read the same input tensor (q/k/v, gate/up) are found on the first forward (same
tensor object) and share one accumulator, so their Hessian is built once and the solver can
treat them as one group.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class HessianHooks:
    """Use as a context manager around the Hessian pass of one block.

    ``make_acc(in_features)`` builds an accumulator with ``.add(x)``. After the first forward,
    :attr:`groups` lists the names of layers sharing one input, in module order.
    """

    def __init__(self, linears: dict[str, nn.Linear], make_acc: Callable[[int], object]):
        self.linears = linears
        self.make_acc = make_acc
        self.order = {name: i for i, name in enumerate(linears)}
        self.accs: dict[str, object] = {}  # group leader -> accumulator
        self.leader: dict[str, str] = {}  # layer -> group leader
        self._seen: dict[int, tuple[str, torch.Tensor]] = {}
        self._handles: list = []
        self._discovering = True

    def __enter__(self) -> "HessianHooks":
        for name, lin in self.linears.items():
            self._handles.append(lin.register_forward_pre_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._seen.clear()

    def _hook(self, name: str):
        def hook(module, args):
            x = args[0]
            if self._discovering:
                hit = self._seen.get(id(x))
                if hit is not None and hit[1] is x:
                    self.leader[name] = hit[0]
                    return None
                self._seen[id(x)] = (name, x)  # holding x keeps its id unique in this forward
                self.leader[name] = name
                self.accs[name] = self.make_acc(module.in_features)
                self.accs[name].add(x.detach())
            elif self.leader.get(name) == name:
                self.accs[name].add(x.detach())
            return None

        return hook

    def end_forward(self) -> None:
        """Call after every forward; the first one fixes the groups."""
        if self._discovering:
            missing = [n for n in self.linears if n not in self.leader]
            if missing:
                raise RuntimeError(f"linear layers {missing} were not called in the block's forward")
            self._discovering = False
            self._seen.clear()

    @property
    def groups(self) -> list[list[str]]:
        by_leader: dict[str, list[str]] = {}
        for name in self.linears:
            by_leader.setdefault(self.leader[name], []).append(name)
        return sorted(by_leader.values(), key=lambda g: self.order[g[0]])

    def accumulator(self, name: str):
        return self.accs[self.leader[name]]
