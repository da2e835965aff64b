"""Merge the launches a tuning run chose (``tuned_*.json`` of ``kernel_bench.py`` / ``lop3.py``)
into the library's table, ``src/matgptq/kernels/tuned.json``, and print what changed.

    python benchmarks/merge_tuned.py benchmarks/results/tuned_lop3_h100m.json
    python benchmarks/merge_tuned.py RUN.json --dry-run          # only the table of changes

Every entry must be a valid KernelConfig (checked before anything is written); later files win
over earlier ones; the table is rewritten atomically in its own format.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from matgptq.checkpoint.atomic import write_bytes
from matgptq.kernels.configs import TUNED_FILE, KernelConfig


def _key(entry: dict | None) -> str:
    return "-" if entry is None else KernelConfig(**entry).key()


def merge(paths: list[str], table: Path = TUNED_FILE, dry_run: bool = False) -> list[tuple[str, str, str]]:
    """(table key, old launch, new launch) for every entry that changes; the table is written
    unless ``dry_run``. A file that is not a tuned table, or a bad entry, raises before any write."""
    old = json.loads(table.read_text()) if table.exists() else {}
    new, changed = dict(old), {}
    for p in paths:
        try:
            run = json.loads(Path(p).read_text())
        except (OSError, ValueError) as e:
            raise SystemExit(f"{p}: cannot read it as JSON ({e}); pass a tuning run's tuned_TAG.json") from e
        if not isinstance(run, dict) or "rows" in run:
            raise SystemExit(f"{p}: not a tuned table (a dict of 'GPU|NxK|mB|fmt|..' keys); pass the run's "
                             "tuned_TAG.json, not its result file")
        for k, entry in run.items():
            if k.count("|") < 4:
                raise SystemExit(f"{p}: key {k!r} is not a table key ('GPU|NxK|mB|fmt|group|dtype')")
            try:
                cfg = asdict(KernelConfig(**entry))
            except (TypeError, ValueError) as e:
                raise SystemExit(f"{p}: entry {k!r} is not a valid launch ({e}); fix or drop it") from e
            if k not in old or asdict(KernelConfig(**old[k])) != cfg:  # older entries lack newer fields
                new[k] = changed[k] = cfg
            else:  # a later file may set back what the table holds
                new[k] = old[k]
                changed.pop(k, None)
    changes = [(k, _key(old.get(k)), _key(v)) for k, v in changed.items()]
    if changes and not dry_run:
        write_bytes(table, json.dumps(new, indent=0).encode())
    return changes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="tuned_TAG.json files, later ones winning")
    ap.add_argument("--table", default=str(TUNED_FILE), help="the table to update (default: the library's)")
    ap.add_argument("--dry-run", action="store_true", help="print the changes, write nothing")
    args = ap.parse_args()
    changes = merge(args.runs, Path(args.table), args.dry_run)
    w = max((len(k) for k, _, _ in changes), default=0)
    for k, a, b in changes:
        print(f"{k:<{w}}  {a}  ->  {b}")
    print(f"{len(changes)} entries {'would change' if args.dry_run else 'changed'} in {args.table}")


if __name__ == "__main__":
    main()
