"""Open a checkpoint folder (ours or the published MatGPTQ format) and check it before use."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..quant import QuantizedWeight
from .format import INDEX_FILE, QuantMeta
from .tensors import CorruptCheckpointError, load_shard, read_header, weight_from_tensors


@dataclass
class Checkpoint:
    path: Path
    model_config: dict
    meta: QuantMeta
    shards: list[Path]
    headers: dict[str, dict]  # tensor name -> header entry (dtype, shape)

    @property
    def modules(self) -> list[str]:
        return sorted(k[: -len(".qweight")] for k in self.headers if k.endswith(".qweight"))

    def read(self) -> tuple[dict[str, QuantizedWeight], dict[str, torch.Tensor]]:
        """({module: QuantizedWeight}, {other tensor name: tensor})."""
        tensors: dict[str, torch.Tensor] = {}
        for s in self.shards:
            tensors.update(load_shard(s))
        modules = self.modules
        qws = {m: weight_from_tensors(m, tensors, self.meta.config) for m in modules}
        quant_keys = {f"{m}.{s}" for m in modules for s in ("qweight", "scales", "qzeros", "perm")}
        rest = {k: v for k, v in tensors.items() if k not in quant_keys}
        return qws, rest


def open_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read config.json and every shard header; check that metadata and tensors agree."""
    path = Path(path)
    if not path.is_dir():
        if Path(str(path) + ".partial").is_dir():
            raise FileNotFoundError(
                f"{path} does not exist but {path}.partial does: the quantization run was "
                "interrupted; re-run the same quantize command to finish it"
            )
        raise FileNotFoundError(f"checkpoint folder {path} does not exist; give the folder written by 'matgptq quantize'")
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise CorruptCheckpointError(f"{path} has no config.json; it is not a Hugging Face model folder")
    try:
        model_config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as e:
        raise CorruptCheckpointError(f"{cfg_path} is not valid JSON ({e}); restore it from the original checkpoint") from None
    qc = model_config.get("quantization_config")
    if not qc:
        raise ValueError(
            f"{path} is not a quantized checkpoint (config.json has no quantization_config); "
            "quantize it first with 'matgptq quantize'"
        )
    meta = QuantMeta.from_dict(qc)
    shards = _shards(path)
    headers: dict[str, dict] = {}
    for s in shards:
        h, _ = read_header(s)
        headers.update({k: v for k, v in h.items() if k != "__metadata__"})
    ck = Checkpoint(path, model_config, meta, shards, headers)
    _check(ck)
    return ck


def _shards(path: Path) -> list[Path]:
    index = path / INDEX_FILE
    if index.is_file():
        try:
            wm = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CorruptCheckpointError(f"{index} is corrupt ({e}); restore it from the original checkpoint") from None
        names = sorted(set(wm.values()))
        missing = [n for n in names if not (path / n).is_file()]
        if missing:
            raise CorruptCheckpointError(f"{path} is missing shards {missing}; copy the whole checkpoint folder again")
        return [path / n for n in names]
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    if list(path.glob("*.bin")) or list(path.glob("*.pt")):
        raise CorruptCheckpointError(f"{path} holds pickle weights (.bin/.pt); matgptq reads safetensors only")
    raise CorruptCheckpointError(f"{path} has no safetensors weights; copy the whole checkpoint folder again")


def _check(ck: Checkpoint) -> None:
    """Metadata against tensor headers, without reading tensor data."""
    meta, h = ck.meta, ck.headers
    mods = ck.modules
    if not mods:
        raise CorruptCheckpointError(f"{ck.path} holds no quantized tensors (*.qweight); it is not a MatGPTQ checkpoint")
    if meta.modules and sorted(meta.modules) != mods:
        listed, found = set(meta.modules), set(mods)
        raise CorruptCheckpointError(
            f"quantization_config.modules disagrees with the tensors (listed only: "
            f"{sorted(listed - found)[:5]}, stored only: {sorted(found - listed)[:5]}); restore the "
            "original config.json or re-quantize"
        )
    g = meta.config.group_size
    for m in mods:
        q = h[f"{m}.qweight"]
        if q["dtype"] != "U8" or len(q["shape"]) != 2:
            raise CorruptCheckpointError(f"{m}.qweight is {q['dtype']} {q['shape']}; expected uint8 [out, in]")
        r, c = q["shape"]
        s = h.get(f"{m}.scales")
        if s is None:
            raise CorruptCheckpointError(f"{m}.scales is missing; copy the whole checkpoint again")
        gs = g or c
        if c % gs or s["shape"] != [r, c // gs]:
            raise CorruptCheckpointError(
                f"{m}.scales has shape {s['shape']} but codes {q['shape']} with group_size={g} "
                f"need [{r}, {c // gs if c % gs == 0 else '?'}]; the metadata disagrees with the "
                "tensors: restore the original config.json or re-quantize"
            )
        if not meta.published and f"{m}.qzeros" not in h:
            raise CorruptCheckpointError(f"{m}.qzeros is missing; copy the whole checkpoint again")
    if meta.layer_bits:
        unknown = sorted(set(meta.layer_bits) - set(mods))
        if unknown:
            raise CorruptCheckpointError(f"layer_bits names modules that are not quantized: {unknown[:5]}")
