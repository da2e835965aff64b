"""Named per-layer bit profiles stored in the checkpoint's config.json (atomically).

``quantization_config["profiles"][name] = {"layer_bits": {module: bits}, "target_bits": ...,
"average_bits": ..., "method": ..., ...}``. ``matgptq.load(path, profile=name)`` applies one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..checkpoint.atomic import write_json
from ..checkpoint.tensors import group_overhead_bits

KEY = "profiles"


def profile_name(target: float) -> str:
    """The default name of a profile: the target, e.g. "3.25"."""
    return f"{float(target):g}"


def list_profiles(model_config: dict) -> dict[str, dict]:
    return dict((model_config.get("quantization_config") or {}).get(KEY) or {})


def profile_bits(model_config: dict, name: str, modules: list[str] | None = None,
                 master_bits: int = 8) -> dict[str, int]:
    """The {module: bits} map of profile ``name``, checked against the checkpoint."""
    profiles = list_profiles(model_config)
    if str(name) not in profiles:
        have = ", ".join(sorted(profiles)) or "none"
        raise ValueError(f"profile {name!r} is not in this checkpoint (profiles: {have}); "
                         "create it with 'matgptq search CHECKPOINT --target-bits ...'")
    bits = {k: int(v) for k, v in (profiles[str(name)].get("layer_bits") or {}).items()}
    _validate(bits, modules, master_bits, name)
    return bits


def _validate(bits: dict[str, int], modules: list[str] | None, master_bits: int, name: str) -> None:
    if not bits:
        raise ValueError(f"profile {name!r} has no layer_bits; re-run the search")
    bad = sorted(b for b in set(bits.values()) if not 2 <= b <= master_bits)
    if bad:
        raise ValueError(f"profile {name!r} uses widths {bad} outside 2..{master_bits}; re-run the search")
    if modules is not None:
        missing, unknown = sorted(set(modules) - set(bits)), sorted(set(bits) - set(modules))
        if missing or unknown:
            raise ValueError(f"profile {name!r} does not match the checkpoint's layers (missing {missing[:3]}, "
                             f"unknown {unknown[:3]}); re-run the search on this checkpoint")


def store_profile(path: str | os.PathLike, name: str, record: dict[str, Any], modules: list[str] | None = None,
                  master_bits: int = 8) -> Path:
    """Add (or replace) profile ``name`` in ``path/config.json``; the write is atomic."""
    cfg_path = Path(path) / "config.json"
    cfg = json.loads(cfg_path.read_text())
    qc = cfg.get("quantization_config")
    if not qc:
        raise ValueError(f"{path} is not a quantized checkpoint (config.json has no quantization_config)")
    _validate({k: int(v) for k, v in record["layer_bits"].items()}, modules, master_bits, name)
    profiles = dict(qc.get(KEY) or {})
    profiles[str(name)] = {**record, "layer_bits": dict(sorted(record["layer_bits"].items()))}
    qc[KEY] = dict(sorted(profiles.items()))
    write_json(cfg_path, cfg)
    return cfg_path


def profile_size(headers: dict[str, dict], sym: bool, layer_bits: dict[str, int]) -> dict[str, float]:
    """Average code bits, bits per weight with scales (+ zeros) and the quantized size in MB."""
    n, code_bits, extra_bits = 0, 0, 0
    for m, b in layer_bits.items():
        r, c = headers[f"{m}.qweight"]["shape"]
        n += r * c
        code_bits += r * c * int(b)
        extra_bits += group_overhead_bits(headers, m, sym)
    return {"average_bits": round(code_bits / max(n, 1), 4),
            "bits_per_weight": round((code_bits + extra_bits) / max(n, 1), 4),
            "quantized_MB": round((code_bits + extra_bits) / 8e6, 3)}
