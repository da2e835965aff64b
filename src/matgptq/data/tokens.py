"""Tokenization (METHOD §6) and deterministic calibration sampling with an on-disk cache."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .sources import check_source, describe, env_cache_dir, load_documents


def tokenize_text(tokenizer, docs: list[str]) -> torch.Tensor:
    """Join documents with "\\n\\n" and tokenize once, without special tokens -> int64 [T]."""
    text = "\n\n".join(docs)
    if not text.strip():
        raise ValueError("the text is empty; give a source that holds text")
    ids = tokenizer(text, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def eval_tokens(tokenizer, source: str = "sotu") -> torch.Tensor:
    """The held-out evaluation text of ``source`` as one token stream."""
    return tokenize_text(tokenizer, load_documents(source, "evaluation"))


@dataclass(frozen=True)
class CalibrationSpec:
    """What calibration data a run used; recorded in the checkpoint."""

    source: str
    num_samples: int = 128
    seq_len: int = 2048
    seed: int = 0

    def check(self) -> None:
        if not isinstance(self.num_samples, int) or self.num_samples < 1:
            raise ValueError(f"num_samples={self.num_samples!r} must be a positive int (e.g. 128)")
        if not isinstance(self.seq_len, int) or self.seq_len < 2:
            raise ValueError(f"seq_len={self.seq_len!r} must be an int >= 2 (e.g. 2048)")
        check_source(self.source, "calibration")

    @property
    def num_tokens(self) -> int:
        return self.num_samples * self.seq_len

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tokens"] = self.num_tokens
        d["text"] = describe(self.source, "calibration") if not _is_path(self.source) else self.source
        return d


def _is_path(source: str) -> bool:
    return Path(source).is_file()


def sample_windows(stream: torch.Tensor, num_samples: int, seq_len: int, seed: int) -> torch.Tensor:
    """``num_samples`` random windows of ``seq_len`` tokens from one token stream -> [n, seq_len].

    Deterministic given ``seed`` (a private torch.Generator; global RNG state untouched).
    """
    if stream.numel() < seq_len + 1:
        raise ValueError(
            f"the calibration text has {stream.numel()} tokens, fewer than seq_len={seq_len}; "
            "give more text or a shorter --seq-len"
        )
    g = torch.Generator().manual_seed(int(seed))
    starts = torch.randint(0, stream.numel() - seq_len, (num_samples,), generator=g)
    return torch.stack([stream[s : s + seq_len] for s in starts.tolist()])


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of what decides token ids: the vocabulary and the tokenizer class."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    vocab = tokenizer.get_vocab()
    h.update(json.dumps(sorted(vocab.items()), ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def calibration_tokens(
    tokenizer, spec: CalibrationSpec, cache_dir: str | os.PathLike | None = None
) -> torch.Tensor:
    """Tokenized calibration set [num_samples, seq_len] (int64), cached as safetensors."""
    from safetensors.torch import load_file, save_file

    spec.check()
    source_id = spec.source
    if _is_path(spec.source):  # a local file: key on its content, not its name
        source_id = hashlib.sha256(Path(spec.source).read_bytes()).hexdigest()
    key = hashlib.sha256(
        json.dumps(
            {"src": source_id, "n": spec.num_samples, "L": spec.seq_len, "seed": spec.seed,
             "tok": tokenizer_fingerprint(tokenizer), "v": 1},
            sort_keys=True,
        ).encode()
    ).hexdigest()[:24]
    cache = Path(cache_dir) if cache_dir is not None else env_cache_dir() / "calibration"
    path = cache / f"{key}.safetensors"
    if path.is_file():
        try:
            return load_file(str(path))["input_ids"]
        except Exception:  # a corrupt cache entry is rebuilt, never trusted
            path.unlink(missing_ok=True)
    stream = tokenize_text(tokenizer, load_documents(spec.source, "calibration"))
    ids = sample_windows(stream, spec.num_samples, spec.seq_len, spec.seed).contiguous()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache, suffix=".tmp")
        os.close(fd)
        save_file({"input_ids": ids}, tmp)
        os.replace(tmp, path)
    except OSError:
        pass  # caching is an optimisation; a read-only home must not stop the run
    return ids
