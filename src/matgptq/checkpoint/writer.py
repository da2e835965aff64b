"""Write a checkpoint block by block into ``<out>.partial/`` and move it to ``<out>`` at the end.

``state.json`` in the partial folder records the run's fingerprint and the finished blocks; a
re-run of the same command finds it, reloads those blocks and goes on after the last one. The
finished checkpoint holds no timestamps or other varying data, so a resumed run writes the same
bytes as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from ..quant import QuantConfig, QuantizedWeight
from .atomic import write_json, write_safetensors
from .format import INDEX_FILE, QuantMeta, shard_name
from .tensors import quantized_tensors, read_block_weights

log = logging.getLogger("matgptq")
STATE_FILE = "state.json"


def fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class CheckpointWriter:
    def __init__(self, out_dir: str | os.PathLike, fp: str, num_blocks: int, block_prefix: str,
                 config: QuantConfig, overwrite: bool = False, resume: bool = True):
        self.out = Path(out_dir)
        self.partial = self.out.parent / (self.out.name + ".partial")
        self.fp = fp
        self.n_shards = num_blocks + 1
        self.num_blocks = num_blocks
        self.prefix = block_prefix
        self.config = config
        self.overwrite = overwrite
        self.resume = resume
        self.done: list[int] = []
        self.stats: dict[str, dict] = {}

    # -- checks before long work ---------------------------------------------------------------
    def check(self) -> None:
        if self.out.exists() and not self.overwrite:
            raise FileExistsError(
                f"output folder {self.out} already exists; pass overwrite=True (--overwrite) "
                "or choose another output folder"
            )
        if self.out.exists() and self.out.is_file():
            raise FileExistsError(f"output path {self.out} is a file; choose a folder path")
        self.out.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(self.out.parent, os.W_OK):
            raise PermissionError(f"cannot write to {self.out.parent}; choose a writable output folder")

    def start(self) -> dict[int, dict[str, QuantizedWeight]]:
        """Open (or resume) the partial folder; return the blocks already finished."""
        state_path = self.partial / STATE_FILE
        if self.partial.exists() and self.resume and state_path.is_file():
            state = json.loads(state_path.read_text())
            if state.get("fingerprint") != self.fp:
                raise RuntimeError(
                    f"{self.partial} holds a partial run with different settings (model, "
                    "calibration or quantization config); delete that folder or rerun with the "
                    "original settings"
                )
            finished = {}
            for k in state.get("done", []):
                try:
                    finished[k] = read_block_weights(self.partial / shard_name(k + 1, self.n_shards),
                                                     f"{self.prefix}.{k}.", self.config)
                except Exception as e:  # a damaged shard: redo that block and everything after
                    log.warning("block %d of the partial run cannot be read (%s); redoing it", k, e)
                    break
                self.stats.update(state.get("stats", {}).get(str(k), {}))
            # resume only a prefix of finished blocks: later ones are recomputed
            ks = sorted(finished)
            keep = {}
            for i, k in enumerate(ks):
                if k != i:
                    break
                keep[k] = finished[k]
            self.done = sorted(keep)
            if keep:
                log.info("resuming %s after block %d", self.partial, max(keep))
            self._write_state(state.get("stats", {}))
            return keep
        if self.partial.exists():
            shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True)
        self._write_state({})
        return {}

    def _write_state(self, stats: dict) -> None:
        self._block_stats = {k: v for k, v in stats.items() if int(k) in self.done}
        write_json(self.partial / STATE_FILE,
                   {"fingerprint": self.fp, "done": self.done, "stats": self._block_stats})

    # -- per block -----------------------------------------------------------------------------
    def write_block(self, k: int, block: torch.nn.Module, qws: dict[str, QuantizedWeight]) -> None:
        """Shard k+1: the block's quantized linears plus its other (float) tensors."""
        base = f"{self.prefix}.{k}."
        tensors = {}
        for name, t in block.state_dict().items():
            mod, _, leaf = name.rpartition(".")
            if mod in qws and leaf == "weight":
                continue
            tensors[base + name] = t
        for name, qw in qws.items():
            tensors.update(quantized_tensors(base + name, qw))
        write_safetensors(self.partial / shard_name(k + 1, self.n_shards), tensors)
        stats = {
            base + n: {"loss": qw.stats.loss, "damp": qw.stats.damp, "damp_retries": qw.stats.damp_retries,
                       "dead_inputs": qw.stats.dead_inputs}
            for n, qw in qws.items()
        }
        self.stats.update(stats)
        self.done.append(k)
        all_stats = dict(self._block_stats)
        all_stats[str(k)] = stats
        self._write_state(all_stats)

    # -- the end -------------------------------------------------------------------------------
    def finalize(self, rest: dict[str, torch.Tensor], model_config: dict, meta: QuantMeta,
                 tokenizer=None, generation_config=None) -> Path:
        if sorted(self.done) != list(range(self.num_blocks)):
            raise RuntimeError(f"cannot finish: blocks done {self.done} of {self.num_blocks}")
        p = self.partial
        write_safetensors(p / shard_name(self.n_shards, self.n_shards), rest)
        weight_map, total = {}, 0
        from .tensors import read_header

        for i in range(1, self.n_shards + 1):
            name = shard_name(i, self.n_shards)
            header, _ = read_header(p / name)
            for key, info in header.items():
                if key == "__metadata__":
                    continue
                weight_map[key] = name
                total += info["data_offsets"][1] - info["data_offsets"][0]
        write_json(p / INDEX_FILE, {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})
        cfg = dict(model_config)
        cfg["quantization_config"] = meta.to_dict()
        write_json(p / "config.json", cfg)
        write_json(p / "quant_stats.json", self.stats)
        if generation_config is not None:
            generation_config.save_pretrained(p)
        if tokenizer is not None:
            tokenizer.save_pretrained(p)
        (p / STATE_FILE).unlink()
        if self.out.exists():
            shutil.rmtree(self.out)
        os.replace(p, self.out)
        return self.out
