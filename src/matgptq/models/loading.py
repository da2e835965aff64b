"""Load a float causal LM (a folder, or a .gguf file converted once) with clear errors."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

import torch

from .traverse import UnsupportedModelError

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "auto": "auto"}


def parse_dtype(dtype) -> torch.dtype | str | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype={dtype!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def check_model_path(path: str | os.PathLike) -> Path:
    """A folder holding a causal-LM config.json, or a .gguf file; anything else fails here."""
    p = Path(path)
    if p.is_file() and p.suffix == ".gguf":
        return p
    if not p.exists():
        if _looks_like_hub_id(str(path)):
            return _check_hub_model(str(path))
        raise FileNotFoundError(
            f"model {str(path)!r} not found: give a local model folder (config.json + safetensors), "
            "a .gguf file, or a Hugging Face Hub id such as 'org/name'"
        )
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{p} has no config.json; give a Hugging Face model folder")
    try:
        cfg = json.loads((p / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}/config.json is not valid JSON ({e}); restore the model folder") from None
    archs = cfg.get("architectures") or []
    if cfg.get("is_encoder_decoder") or (archs and not any("CausalLM" in a or "LMHead" in a for a in archs)):
        raise UnsupportedModelError(
            f"{p} is a {', '.join(archs) or cfg.get('model_type')} model, not a causal LM; "
            "give a decoder-only model with a ...ForCausalLM architecture"
        )
    qc = cfg.get("quantization_config")
    if qc and qc.get("quant_method") in ("matgptq", "matgptq_quant"):
        raise ValueError(f"{p} is already a MatGPTQ checkpoint; quantize the original float model instead")
    return p


def _looks_like_hub_id(name: str) -> bool:
    import re

    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", name)) and not name.startswith((".", "/"))


def _check_hub_model(name: str):
    """A Hub id: fetch only its config (fast) so a missing or non-causal model fails early."""
    from transformers import AutoConfig

    try:
        cfg = AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as e:
        raise FileNotFoundError(
            f"model {name!r} is neither a local folder nor a reachable Hugging Face Hub model "
            f"({str(e).splitlines()[0][:160]}); give a local model folder or check the name and network"
        ) from None
    archs = getattr(cfg, "architectures", None) or []
    if getattr(cfg, "is_encoder_decoder", False) or (archs and not any("CausalLM" in a for a in archs)):
        raise UnsupportedModelError(f"{name} is a {', '.join(archs)} model, not a causal LM; give a decoder-only model")
    return name


def load_float_model(path: str | os.PathLike, dtype=None, cache_dir: str | os.PathLike | None = None):
    """(model, tokenizer) from a model folder or a .gguf file (converted once and cached)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = check_model_path(path)
    if isinstance(p, Path) and p.suffix == ".gguf":
        from ..data.sources import env_cache_dir
        from .gguf import convert_gguf

        root = Path(cache_dir) if cache_dir else env_cache_dir() / "gguf"
        p = convert_gguf(p, root / p.stem)
    dtype = parse_dtype(dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(p, dtype=dtype if dtype is not None else "auto")
    except ValueError as e:
        if "Unrecognized configuration class" in str(e):
            raise UnsupportedModelError(f"{p} is not a causal LM ({str(e).splitlines()[0]}); give a decoder-only model") from None
        raise
    tokenizer = None
    try:
        tokenizer = AutoTokenizer.from_pretrained(p)
    except Exception:  # noqa: BLE001 - a model without tokenizer files can still take token ids
        tokenizer = None
    model.eval()
    return model, tokenizer


@contextmanager
def meta_parameters():
    """Build modules with parameters on the meta device (no memory, no init) but real buffers
    (rotary tables are computed at construction and not stored in checkpoints)."""
    from torch import nn

    register = nn.Module.register_parameter

    def to_meta(self, name, param):
        register(self, name, param)
        if param is not None and param.device.type != "meta":
            self._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = to_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register
