"""The checkpoint format: tensor names, shard names and the ``quantization_config`` block.

A checkpoint is a Hugging Face model directory. Every quantized linear ``X`` stores
``X.qweight`` (uint8 [R, C] master codes, storage column order), ``X.scales`` ([R, G], the
solver's scale dtype), ``X.qzeros`` (uint8 [R, G] master zeros), ``X.perm`` (int64 [C], only for
act_order without static groups) and, if it has one, ``X.bias``. Everything else is stored as in
the original model. One shard per decoder block plus a last shard for the rest (embeddings,
norms, lm_head), so a run can resume after its last finished block.

The published MatGPTQ format (METHOD §7, ``quant_method = "matgptq_quant"``) is read too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import __version__
from ..quant import QuantConfig

QUANT_METHOD = "matgptq"
PUBLISHED_METHOD = "matgptq_quant"
FORMAT_VERSION = 1
INDEX_FILE = "model.safetensors.index.json"
SUFFIXES = ("qweight", "scales", "qzeros", "perm")


def shard_name(i: int, n: int) -> str:
    """1-based shard ``i`` of ``n`` (Hugging Face naming)."""
    return f"model-{i:05d}-of-{n:05d}.safetensors"


@dataclass
class QuantMeta:
    """Everything ``quantization_config`` records, parsed and checked."""

    config: QuantConfig
    modules: list[str]
    default_bits: int
    layer_bits: dict[str, int] | None = None
    calibration: dict[str, Any] = field(default_factory=dict)
    library_version: str = __version__
    published: bool = False

    def bits_for(self, module: str, bits: int | dict[str, int] | None = None) -> int:
        if isinstance(bits, dict):
            return int(bits.get(module, self.default_bits))
        if bits is not None:
            return int(bits)
        if self.layer_bits and module in self.layer_bits:
            return int(self.layer_bits[module])
        return self.default_bits

    def to_dict(self) -> dict[str, Any]:
        c = self.config
        return {
            "quant_method": QUANT_METHOD,
            "format_version": FORMAT_VERSION,
            "method": c.method,
            "master_bits": c.master_bits,
            "bits": list(c.bits),
            "lambdas": list(c.lambdas),
            "group_size": c.group_size,
            "sym": c.sym,
            "act_order": c.act_order,
            "static_groups": c.static_groups,
            "slicing": c.slicing,
            "default_bits": self.default_bits,
            "layer_bits": dict(sorted(self.layer_bits.items())) if self.layer_bits else None,
            "modules": sorted(self.modules),
            "calibration": self.calibration,
            "library_version": self.library_version,
            "solver": c.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "QuantMeta":
        method = d.get("quant_method")
        if method == PUBLISHED_METHOD:
            return cls._from_published(d)
        if method != QUANT_METHOD:
            raise ValueError(
                f"quantization_config.quant_method is {method!r}, not {QUANT_METHOD!r} or "
                f"{PUBLISHED_METHOD!r}; this is not a MatGPTQ checkpoint"
            )
        if d.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"checkpoint format_version {d.get('format_version')!r} is not {FORMAT_VERSION}; "
                "upgrade matgptq to read it"
            )
        try:
            config = QuantConfig.from_dict(d["solver"])
        except KeyError:
            raise ValueError("quantization_config has no 'solver' entry; the checkpoint metadata is incomplete") from None
        for key in ("method", "master_bits", "group_size", "sym", "act_order", "static_groups", "slicing"):
            if key in d and d[key] != getattr(config, key):
                raise ValueError(
                    f"quantization_config.{key}={d[key]!r} disagrees with solver.{key}="
                    f"{getattr(config, key)!r}; the metadata was edited by hand: restore it"
                )
        if "bits" in d and tuple(d["bits"]) != config.bits:
            raise ValueError(f"quantization_config.bits={d['bits']} disagrees with solver.bits={list(config.bits)}")
        meta = cls(
            config=config,
            modules=list(d.get("modules") or []),
            default_bits=int(d.get("default_bits", config.master_bits)),
            layer_bits=d.get("layer_bits") or None,
            calibration=d.get("calibration") or {},
            library_version=d.get("library_version", "?"),
        )
        meta.check_bits()
        return meta

    @classmethod
    def _from_published(cls, d: dict[str, Any]) -> "QuantMeta":
        master = int(d.get("master_bitwidth", 8))
        g = d.get("group_size", 128)
        g = None if g in (None, -1, 0) else int(g)
        dtype = d.get("quant_dtype", "float16")
        config = QuantConfig(
            method="matgptq", bits=(master,), master_bits=master, group_size=g, sym=True,
            slicing="round", scale_dtype=dtype,
        )
        meta = cls(
            config=config, modules=[], default_bits=int(d.get("inference_bitwidth", master)),
            published=True, library_version="published",
        )
        meta.check_bits()
        return meta

    def check_bits(self) -> None:
        m = self.config.master_bits
        wanted = [self.default_bits] + list((self.layer_bits or {}).values())
        for b in wanted:
            check_bits(b, m)


def check_bits(bits: int, master_bits: int = 8) -> int:
    """A precision this checkpoint can serve: an int in 2..master_bits."""
    try:
        b = int(bits)
    except (TypeError, ValueError):
        raise ValueError(f"bits={bits!r} is not an integer; use one of 2..{master_bits}") from None
    if b != bits or not 2 <= b <= master_bits:
        raise ValueError(f"bits={bits!r} is outside 2..{master_bits}; choose bits in 2..{master_bits}")
    return b
