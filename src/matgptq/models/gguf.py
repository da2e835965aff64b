"""Turn a llama.cpp GGUF file into an ordinary float Hugging Face checkpoint, once, and cache it.

transformers can de-quantize a GGUF on every load (slow); a model loaded that way cannot be
written with ``save_pretrained``. So we copy its state dict into a fresh model built from its
config and save that, atomically, into a cache directory.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)


def convert_gguf(gguf_file: str | os.PathLike, out_dir: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Path:
    """Write a float checkpoint (config, safetensors, tokenizer) of ``gguf_file`` to ``out_dir``.

    Needs the ``gguf`` and ``accelerate`` packages (``pip install 'matgptq[gguf]'``).
    Returns ``out_dir``. If ``out_dir`` already holds a converted model it is reused.
    """
    gguf_file = Path(gguf_file)
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file() and any(out_dir.glob("*.safetensors")):
        return out_dir
    if not gguf_file.is_file():
        raise FileNotFoundError(f"GGUF file {gguf_file} does not exist; pass the path of a .gguf file")
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise ImportError(
            "reading a GGUF file needs the 'gguf' package; run: pip install 'matgptq[gguf]'"
        ) from None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a float checkpoint in %s (one time)", gguf_file, out_dir)
    folder, name = str(gguf_file.parent), gguf_file.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    src = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)
    config = src.config
    if hasattr(config, "quantization_config"):  # the float copy is no longer a GGUF
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=dtype)
    missing, unexpected = fresh.load_state_dict(src.state_dict(), strict=False)
    # tied embeddings show up as a missing lm_head; anything else is a real mismatch
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    fresh.generation_config = src.generation_config
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".tmp-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)
        fresh.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
