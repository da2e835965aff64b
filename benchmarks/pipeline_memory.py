"""Peak GPU memory and wall time of quantizing a Llama-3.1-8B-shaped model (random bf16 weights).

    PYTHONPATH=src python benchmarks/pipeline_memory.py [--samples 128] [--seq-len 2048] [--layers 32]

The model is built with parameters on the meta device and materialised block by block on the
CPU (random normal weights, std 0.02, drawn on the GPU), so host memory holds one bf16 copy
(about 16 GB). Calibration: random token ids. Runs the full ``quantize_model`` (MatGPTQ B={8,4,3},
group 128, symmetric, round slicing) including writing the checkpoint, with the model on the CPU
and only the active block and its activations on the GPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch


def llama31_8b_config(layers: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=layers,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
        rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=128000, eos_token_id=128001,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192},
    )


def random_model(layers: int, gen_device: str):
    from transformers import LlamaForCausalLM

    from matgptq.models.loading import meta_parameters

    cfg = llama31_8b_config(layers)
    with meta_parameters():
        model = LlamaForCausalLM._from_config(cfg, dtype=torch.bfloat16)
    g = torch.Generator(device=gen_device).manual_seed(0)
    for name, p in list(model.named_parameters()):
        if p.dim() == 1:
            data = torch.ones(p.shape, dtype=torch.bfloat16)
        else:
            data = (torch.randn(p.shape, generator=g, device=gen_device, dtype=torch.float32) * 0.02)
            data = data.to(torch.bfloat16).cpu()
        mod, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(mod), leaf, torch.nn.Parameter(data, requires_grad=False))
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--out", default=None, help="JSON results path")
    ap.add_argument("--keep", action="store_true", help="keep the written checkpoint")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from matgptq.api import quantize_model
    from matgptq.quant import QuantConfig

    cuda = torch.cuda.is_available()
    dev = "cuda" if cuda else "cpu"
    t0 = time.time()
    model = random_model(args.layers, dev)
    t_build = time.time() - t0
    n_params = sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, 128256, (args.samples, args.seq_len), generator=torch.Generator().manual_seed(0))
    out = Path(tempfile.mkdtemp()) / "ckpt"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t1 = time.time()
    r = quantize_model(model, out, QuantConfig(bits=(8, 4, 3), group_size=128), calibration=ids,
                       device=dev, progress=True)
    t_q = time.time() - t1
    res = {
        "model": f"Llama-3.1-8B shape, {args.layers} blocks, random bf16 weights ({n_params / 1e9:.2f}B params)",
        "calibration": f"{args.samples} x {args.seq_len} random tokens",
        "config": "MatGPTQ B={8,4,3}, group 128, sym, round slicing, Triton block kernel (auto)",
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "build_model_seconds": round(t_build, 1),
        "quantize_seconds_total": round(t_q, 1),
        "seconds_per_block": round(t_q / args.layers, 2),
        "peak_gpu_allocated_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "peak_gpu_reserved_GiB": round(torch.cuda.max_memory_reserved() / 2**30, 2) if cuda else None,
        "checkpoint_GB": round(sum(f.stat().st_size for f in r.path.iterdir()) / 1e9, 2),
        "torch": torch.__version__,
    }
    try:
        import resource

        res["peak_host_rss_GiB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 1)
    except Exception:  # noqa: BLE001
        pass
    print(json.dumps(res, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    if not args.keep:
        shutil.rmtree(out.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
