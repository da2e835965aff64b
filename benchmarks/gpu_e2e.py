"""End to end on a GPU: quantize a small random Llama on CUDA, save, load with the Triton
kernels (fp16 activations, resident and fixed layouts; and, from a second model whose widths
are multiples of 128, quantized with groups of 128, the lop3 layout at 2, 3 and 4 bits) and
compare the logits at every width with the fake-quantized float32 model. Prints one line per
width; exit status 1 on a mismatch.

    PYTHONPATH=src python benchmarks/gpu_e2e.py [--out DIR]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from matgptq.api import load, quantize_model
from matgptq.modules import QuantLinear
from matgptq.quant import QuantConfig


def random_llama(intermediate: int) -> LlamaForCausalLM:
    cfg = LlamaConfig(vocab_size=1000, hidden_size=640, intermediate_size=intermediate, num_hidden_layers=3,
                      num_attention_heads=10, num_key_value_heads=5, max_position_embeddings=256)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.05)
    return model


def compare(model, r, layout, widths, x, device) -> bool:
    """Load checkpoint ``r`` with ``layout`` at each width and compare its logits with the
    fake-quantized float32 model; one line per width."""
    ok = True
    qm = load(r.path, bits=8, device=device, dtype=torch.float16, layout=layout) if layout == "resident" else None
    for b in widths:
        if layout == "resident":
            qm.set_bits(b)
        else:
            qm = load(r.path, bits=b, device=device, dtype=torch.float16, layout=layout)
        ref = copy.deepcopy(model).to(device)
        for name, qw in r.layers.items():
            ref.get_submodule(name).weight.data = qw.dequantize(b).to(torch.float32).to(device)
        with torch.no_grad():
            want = ref(x).logits.double()
            got = qm(x).logits.double()
        qls = [m for m in qm.modules() if isinstance(m, QuantLinear)]
        kernels = sum(1 for m in qls if m._use_kernels(x.half()))
        err = float((got - want).norm() / want.norm())
        good = bool(torch.isfinite(got).all()) and err < 2e-2
        ok &= good
        print(f"{layout:8s} bits={b}: relative logit error {err:.2e} ({kernels} layers on Triton kernels, "
              f"{sum(m.layout == 'lop3' for m in qls)} lop3) {'ok' if good else 'MISMATCH'}", flush=True)
    return ok


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the plain-torch path")
    args = ap.parse_args()
    torch.manual_seed(0)
    # widths that are not multiples of the 512-wide k-tile exercise the masked tails
    model = random_llama(1728)
    calib = torch.randint(0, 1000, (16, 128), generator=torch.Generator().manual_seed(1))
    x = torch.randint(0, 1000, (3, 37), generator=torch.Generator().manual_seed(2)).to(args.device)
    qcfg = QuantConfig(method="matgptq", bits=(8, 4, 3), group_size=64, slicing="round")
    out = args.out or tempfile.mkdtemp()
    t = time.time()
    r = quantize_model(copy.deepcopy(model), f"{out}/ck", qcfg, calibration=calib, device=args.device, progress=False)
    print(f"quantized on {args.device} in {time.time() - t:.1f} s", flush=True)
    ok = compare(model, r, "resident", range(2, 9), x, args.device)
    ok &= compare(model, r, "fixed", range(2, 9), x, args.device)
    # the lop3 layout: groups of 128, symmetric; every projection's width a multiple of 128
    model128 = random_llama(1664)
    r128 = quantize_model(copy.deepcopy(model128), f"{out}/ck128", QuantConfig(method="matgptq", bits=(8, 4, 3, 2)),
                          calibration=calib, device=args.device, progress=False)
    ok &= compare(model128, r128, "lop3", (2, 3, 4), x, args.device)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
