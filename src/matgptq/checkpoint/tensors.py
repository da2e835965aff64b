"""QuantizedWeight <-> named tensors, and safe reading of safetensors shards.

:func:`read_header` checks a shard's structure (header length, JSON, offsets inside the file)
so a truncated or corrupt file fails with a message naming the file and the fix, before any
tensor is read.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import torch

from ..quant import QuantConfig, QuantizedWeight

_DTYPE_SIZES = {"U8": 1, "I8": 1, "BOOL": 1, "F16": 2, "BF16": 2, "I16": 2, "U16": 2, "F32": 4,
                "I32": 4, "U32": 4, "F64": 8, "I64": 8, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


def tensor_bytes(header: dict) -> int:
    """Bytes of one tensor from its safetensors header entry (dtype and shape)."""
    n = 1
    for d in header["shape"]:
        n *= d
    return n * _DTYPE_SIZES.get(header["dtype"], 2)


def group_overhead_bits(headers: dict[str, dict], module: str, sym: bool) -> int:
    """Bits a quantized layer stores besides its codes: its scales, plus 8-bit zeros if asymmetric."""
    s = headers[f"{module}.scales"]
    return 8 * tensor_bytes(s) + (0 if sym else 8 * s["shape"][0] * s["shape"][1])


class CorruptCheckpointError(ValueError):
    """A checkpoint file is missing, truncated or inconsistent with its metadata."""


def quantized_tensors(name: str, qw: QuantizedWeight) -> dict[str, torch.Tensor]:
    out = {
        f"{name}.qweight": qw.codes.to(torch.uint8),
        f"{name}.scales": qw.scales,
        f"{name}.qzeros": qw.zeros.to(torch.uint8),
    }
    if qw.perm is not None:
        out[f"{name}.perm"] = qw.perm.to(torch.int64)
    return out


def weight_from_tensors(name: str, t: dict[str, torch.Tensor], config: QuantConfig) -> QuantizedWeight:
    """Build (and check) one QuantizedWeight from its tensors; published ones have no qzeros."""
    codes = t[f"{name}.qweight"]
    scales = t[f"{name}.scales"]
    if codes.dtype != torch.uint8 or codes.dim() != 2:
        raise CorruptCheckpointError(
            f"{name}.qweight is {codes.dtype} {list(codes.shape)}, expected uint8 [out, in] codes; "
            "the checkpoint is damaged or not a MatGPTQ checkpoint"
        )
    r, c = codes.shape
    g = config.group_size or c
    if c % g:
        raise CorruptCheckpointError(
            f"{name}: group_size={g} in the metadata does not divide the {c} input columns of "
            "its codes; the metadata disagrees with the tensors: restore the original config.json"
        )
    if tuple(scales.shape) != (r, c // g):
        raise CorruptCheckpointError(
            f"{name}.scales has shape {list(scales.shape)} but the codes [{r}, {c}] with "
            f"group_size={config.group_size} need [{r}, {c // g}]; the metadata disagrees with "
            "the tensors: restore the original config.json or re-quantize"
        )
    zeros = t.get(f"{name}.qzeros")
    if zeros is None:
        zeros = torch.full_like(scales, 1 << (config.master_bits - 1), dtype=torch.uint8)
    elif tuple(zeros.shape) != tuple(scales.shape):
        raise CorruptCheckpointError(f"{name}.qzeros has shape {list(zeros.shape)}, expected {list(scales.shape)}")
    perm = t.get(f"{name}.perm")
    if perm is not None and tuple(perm.shape) != (c,):
        raise CorruptCheckpointError(f"{name}.perm has shape {list(perm.shape)}, expected [{c}]")
    if config.act_order and not config.static_groups and perm is None:
        raise CorruptCheckpointError(f"{name}.perm is missing but the metadata says act_order without static groups")
    if int(codes.max()) > (1 << config.master_bits) - 1 if codes.numel() else False:
        raise CorruptCheckpointError(
            f"{name}.qweight holds codes above 2^{config.master_bits}-1; the metadata's master_bits "
            "disagrees with the tensors"
        )
    return QuantizedWeight(codes, scales, zeros, perm, config)


def read_header(path: str | os.PathLike) -> tuple[dict, int]:
    """(header, data start) of a safetensors file, checking it is whole."""
    path = Path(path)
    if not path.is_file():
        raise CorruptCheckpointError(f"shard {path} is missing; copy the whole checkpoint folder again")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CorruptCheckpointError(f"shard {path} is truncated ({size} bytes); copy or re-create it")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100_000_000:
            raise CorruptCheckpointError(f"shard {path} is truncated or corrupt (header of {n} bytes in a file of {size}); copy or re-create it")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CorruptCheckpointError(f"shard {path} has a corrupt header; copy or re-create it") from None
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            a, b = info["data_offsets"]
            numel = 1
            for s in info["shape"]:
                numel *= s
            need = numel * _DTYPE_SIZES.get(info["dtype"], 1)
        except (KeyError, TypeError, ValueError):
            raise CorruptCheckpointError(f"shard {path}: bad header entry for {key}; copy or re-create it") from None
        if b - a != need:
            raise CorruptCheckpointError(f"shard {path}: tensor {key} has inconsistent size; copy or re-create it")
        end = max(end, b)
    if 8 + n + end != size:
        raise CorruptCheckpointError(
            f"shard {path} is truncated or has trailing bytes ({size} bytes, header says "
            f"{8 + n + end}); copy or re-create it"
        )
    return header, 8 + n


def load_shard(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    read_header(path)
    return load_file(str(path))


def read_block_weights(path: str | os.PathLike, prefix: str, config: QuantConfig) -> dict[str, QuantizedWeight]:
    """{name relative to ``prefix``: QuantizedWeight} of every quantized linear in one shard."""
    t = load_shard(path)
    names = sorted(k[: -len(".qweight")] for k in t if k.endswith(".qweight") and k.startswith(prefix))
    return {n[len(prefix):]: weight_from_tensors(n, t, config) for n in names}
