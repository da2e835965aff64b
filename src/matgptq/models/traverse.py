"""Find the decoder blocks of a transformers causal LM and the linear layers inside them.

Generic: the blocks are the ``nn.ModuleList`` of ``config.num_hidden_layers`` modules of one
class (``model.layers`` in Llama, Mistral, Qwen2/Qwen3, Phi-3, Gemma; ``transformer.h`` in
GPT-style models, ``model.decoder.layers`` in OPT). Anything else fails with a clear error.
"""

from __future__ import annotations

import fnmatch

from torch import nn


class UnsupportedModelError(ValueError):
    """The model is not a decoder-only causal LM that this library can traverse."""


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(dotted name, ModuleList) of the decoder blocks."""
    config = getattr(model, "config", None)
    if config is not None and getattr(config, "is_encoder_decoder", False):
        raise UnsupportedModelError(
            f"{type(model).__name__} is an encoder-decoder model; matgptq quantizes decoder-only "
            "causal LMs (Llama, Mistral, Qwen, Phi-3, Gemma, ...)"
        )
    n_layers = None
    if config is not None:
        n_layers = getattr(config, "num_hidden_layers", None)
        text_config = getattr(config, "get_text_config", None)
        if n_layers is None and text_config is not None:
            n_layers = getattr(text_config(), "num_hidden_layers", None)
    candidates = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0:
            kinds = {type(m) for m in mod}
            if len(kinds) == 1 and any(isinstance(m, nn.Linear) for m in mod[0].modules()):
                candidates.append((name, mod))
    if n_layers is not None:
        exact = [c for c in candidates if len(c[1]) == n_layers]
        if exact:
            candidates = exact
    if not candidates:
        raise UnsupportedModelError(
            f"cannot find the decoder blocks of {type(model).__name__}: no list of "
            f"{n_layers or 'identical'} blocks holding nn.Linear layers; matgptq supports "
            "decoder-only transformers models such as Llama, Mistral, Qwen2/3, Phi-3 and Gemma"
        )
    # the outermost list of the most blocks (a vision tower's list is shallower in count)
    name, blocks = max(candidates, key=lambda c: (len(c[1]), -c[0].count(".")))
    return name, blocks


def find_linears(block: nn.Module, skip: tuple[str, ...] = ()) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` of a block, by name relative to the block, in module order.

    ``skip`` holds fnmatch patterns on those names (e.g. ``"mlp.*"``) to leave in float.
    """
    out = {}
    for name, mod in block.named_modules():
        if isinstance(mod, nn.Linear) and not any(fnmatch.fnmatch(name, p) for p in skip):
            out[name] = mod
    return out


def set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
