"""``matgptq info``: shape of a checkpoint, its metadata and its size at every precision."""

from __future__ import annotations

import os
from collections import Counter

from .reader import open_checkpoint
from .tensors import tensor_bytes


def checkpoint_info(path: str | os.PathLike) -> dict:
    ck = open_checkpoint(path)
    meta, h = ck.meta, ck.headers
    mods = ck.modules
    quant_keys = {f"{m}.{s}" for m in mods for s in ("qweight", "scales", "qzeros", "perm")}
    other_bytes = 0
    for k, v in h.items():
        if k not in quant_keys:
            other_bytes += tensor_bytes(v)
    n_weights, scale_bytes, zero_bytes, perm_bytes = 0, 0, 0, 0
    shapes = Counter()
    for m in mods:
        r, c = h[f"{m}.qweight"]["shape"]
        n_weights += r * c
        shapes[f"{m.rsplit('.', 1)[-1]} {r}x{c}"] += 1
        s = h[f"{m}.scales"]
        scale_bytes += tensor_bytes(s)
        if not meta.config.sym and f"{m}.qzeros" in h:
            zero_bytes += s["shape"][0] * s["shape"][1]
        if f"{m}.perm" in h:
            perm_bytes += c * 4  # int32 suffices for a kernel
    per_bits = {}
    for b in range(2, meta.config.master_bits + 1):
        code_bytes = n_weights * b / 8
        total = code_bytes + scale_bytes + zero_bytes + perm_bytes + other_bytes
        per_bits[b] = {
            "bits_per_weight": round((code_bytes + scale_bytes + zero_bytes) * 8 / max(n_weights, 1), 4),
            "quantized_MB": round((code_bytes + scale_bytes + zero_bytes + perm_bytes) / 1e6, 3),
            "total_MB": round(total / 1e6, 3),
        }
    on_disk = sum(s.stat().st_size for s in ck.shards)
    profiles = {}
    for pname, rec in ((ck.model_config.get("quantization_config") or {}).get("profiles") or {}).items():
        from ..search.profiles import profile_size

        size = profile_size(h, meta.config.sym, {m: int(b) for m, b in (rec.get("layer_bits") or {}).items()})
        hist = Counter(int(b) for b in (rec.get("layer_bits") or {}).values())
        profiles[pname] = {**size, "total_MB": round(size["quantized_MB"] + (perm_bytes + other_bytes) / 1e6, 3),
                           "target_bits": rec.get("target_bits"), "method": rec.get("method"),
                           "layers_per_width": {str(b): hist[b] for b in sorted(hist)}}
    return {
        "path": str(ck.path),
        "architecture": (ck.model_config.get("architectures") or [ck.model_config.get("model_type")])[0],
        "num_hidden_layers": ck.model_config.get("num_hidden_layers"),
        "hidden_size": ck.model_config.get("hidden_size"),
        "format": "published MatGPTQ" if meta.published else f"matgptq v{meta.library_version}",
        "quantization": meta.to_dict() if not meta.published else {
            "master_bits": meta.config.master_bits, "group_size": meta.config.group_size,
            "default_bits": meta.default_bits, "slicing": "round", "sym": True},
        "quantized_linears": len(mods),
        "quantized_weights": n_weights,
        "linear_shapes": dict(sorted(shapes.items())),
        "unquantized_MB": round(other_bytes / 1e6, 3),
        "on_disk_MB": round(on_disk / 1e6, 3),
        "size_per_precision": per_bits,
        "shards": len(ck.shards),
        "profiles": profiles,
    }


def format_info(info: dict) -> str:
    q = info["quantization"]
    lines = [
        f"{info['path']}: {info['architecture']}, {info['num_hidden_layers']} blocks, hidden {info['hidden_size']}",
        f"format {info['format']}; {info['quantized_linears']} quantized linears, "
        f"{info['quantized_weights']:,} weights; {info['shards']} shards, {info['on_disk_MB']} MB on disk",
    ]
    keys = ("method", "bits", "lambdas", "master_bits", "group_size", "sym", "slicing", "act_order",
            "static_groups", "default_bits", "calibration", "library_version")
    for k in keys:
        if k in q:
            lines.append(f"  {k}: {q[k]}")
    if q.get("layer_bits"):
        lines.append(f"  layer_bits: {len(q['layer_bits'])} layers set")
    lines.append("  linear shapes: " + ", ".join(f"{k} x{v}" for k, v in info["linear_shapes"].items()))
    lines.append(f"{'bits':>4} {'bits/w':>8} {'quantized MB':>13} {'model MB':>10}   (packed codes + scales"
                 f"{' + zeros' if not q.get('sym', True) else ''}; unquantized tensors {info['unquantized_MB']} MB)")
    for b, s in sorted(info["size_per_precision"].items(), reverse=True):
        lines.append(f"{b:>4} {s['bits_per_weight']:>8} {s['quantized_MB']:>13} {s['total_MB']:>10}")
    if info.get("profiles"):
        lines.append(f"{'profile':>14} {'bits':>6} {'bits/w':>8} {'quantized MB':>13} {'model MB':>10}   "
                     "(per-layer widths from 'matgptq search'; load with profile=NAME)")
        for pname, p in info["profiles"].items():
            widths = ", ".join(f"{n}x{b}b" for b, n in p["layers_per_width"].items())
            lines.append(f"{pname:>14} {p['average_bits']:>6} {p['bits_per_weight']:>8} {p['quantized_MB']:>13} "
                         f"{p['total_MB']:>10}   {p['method']}, target {p['target_bits']}: {widths}")
    return "\n".join(lines)
