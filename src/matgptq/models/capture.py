"""Capture what decoder blocks receive: block 0's hidden states for every calibration sequence
plus, for every block, the other arguments (masks, rotary embeddings, positions, ...).

Every block is temporarily replaced by a recorder that stores its arguments and passes the
hidden states through untouched, so no block computes anything; the last recorder stops the
forward. Per-block arguments matter: Gemma-style models give sliding-window and global layers
different masks and rotary tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .traverse import UnsupportedModelError


class _Stop(Exception):
    pass


class _Recorder(nn.Module):
    def __init__(self, block: nn.Module, index: int, sink: "_Sink"):
        super().__init__()
        self.block = block  # kept so attribute look-ups (e.g. attention_type) still work
        self.index = index
        self.sink = sink

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["block"], name)

    def forward(self, *args, **kwargs):
        s = self.sink
        if args:
            hidden, rest = args[0], tuple(args[1:])
        else:
            hidden, rest = kwargs["hidden_states"], ()
        if self.index == 0:
            s.hidden.append(hidden.detach().to(s.store_device))
        if self.index not in s.kwargs:
            s.args[self.index] = rest
            s.kwargs[self.index] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        if s.done_kwargs or self.index == s.last:
            s.done_kwargs = True
            raise _Stop
        return hidden


@dataclass
class _Sink:
    last: int
    store_device: torch.device
    run_device: torch.device
    hidden: list
    args: dict
    kwargs: dict
    done_kwargs: bool = False


@dataclass
class BlockInputs:
    """Hidden states entering block 0 ([n, seq, hidden]) and each block's other arguments."""

    hidden: torch.Tensor
    args: list[tuple]
    kwargs: list[dict[str, Any]]


@torch.no_grad()
def capture_inputs(
    model: nn.Module,
    blocks: nn.ModuleList,
    input_ids: torch.Tensor,
    device: torch.device | str = "cpu",
    store_device: torch.device | str = "cpu",
) -> BlockInputs:
    """Run the model's embedding stage on every row of ``input_ids`` ([n, seq]), one at a time.

    The model's non-block modules run where they are; ``input_ids`` go to ``device``.
    """
    sink = _Sink(len(blocks) - 1, torch.device(store_device), torch.device(device), [], {}, {})
    originals = list(blocks)
    for i, b in enumerate(originals):
        blocks[i] = _Recorder(b, i, sink)
    try:
        for row in input_ids:
            try:
                model(input_ids=row[None].to(device), use_cache=False)
            except _Stop:
                pass
            else:
                raise UnsupportedModelError(
                    f"{type(model).__name__}.forward finished without calling its last decoder "
                    "block; matgptq cannot traverse this architecture"
                )
    finally:
        for i, b in enumerate(originals):
            blocks[i] = b
    if len(sink.hidden) != len(input_ids) or len(sink.kwargs) != len(blocks):
        raise UnsupportedModelError(
            f"{type(model).__name__} did not call its decoder blocks in order "
            f"(saw {sorted(sink.kwargs)} of {len(blocks)}); matgptq cannot traverse this architecture"
        )
    args = [sink.args[i] for i in range(len(blocks))]
    kwargs = [sink.kwargs[i] for i in range(len(blocks))]
    return BlockInputs(torch.cat(sink.hidden), args, kwargs)


def to_device(obj: Any, device: torch.device | str, cache: dict | None = None) -> Any:
    """Move every tensor in a nested structure (sharing moved copies of shared tensors)."""
    cache = {} if cache is None else cache
    if isinstance(obj, torch.Tensor):
        key = id(obj)
        if key not in cache:
            cache[key] = (obj, obj.to(device))
        return cache[key][1]
    if isinstance(obj, tuple):
        return tuple(to_device(o, device, cache) for o in obj)
    if isinstance(obj, list):
        return [to_device(o, device, cache) for o in obj]
    if isinstance(obj, dict):
        return {k: to_device(v, device, cache) for k, v in obj.items()}
    return obj
