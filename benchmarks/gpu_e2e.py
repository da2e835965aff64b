"""End to end on a GPU: quantize a small random Llama on CUDA, save, load with the Triton
kernels (fp16 activations, resident and fixed layouts) and compare the logits at every width
with the fake-quantized float32 model. Prints one line per width; exit status 1 on a mismatch.

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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of the plain-torch path")
    args = ap.parse_args()
    torch.manual_seed(0)
    # widths that are not multiples of the 512-wide k-tile exercise the masked tails
    cfg = LlamaConfig(vocab_size=1000, hidden_size=640, intermediate_size=1728, num_hidden_layers=3,
                      num_attention_heads=10, num_key_value_heads=5, max_position_embeddings=256)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.05)
    calib = torch.randint(0, 1000, (16, 128), generator=torch.Generator().manual_seed(1))
    x = torch.randint(0, 1000, (3, 37), generator=torch.Generator().manual_seed(2)).to(args.device)
    qcfg = QuantConfig(method="matgptq", bits=(8, 4, 3), group_size=64, slicing="round")
    out = args.out or tempfile.mkdtemp()
    t = time.time()
    r = quantize_model(copy.deepcopy(model), f"{out}/ck", qcfg, calibration=calib, device=args.device, progress=False)
    print(f"quantized on CUDA in {time.time() - t:.1f} s", flush=True)
    ok = True
    for layout in ("resident", "fixed"):
        qm = load(r.path, bits=8, device=args.device, dtype=torch.float16, layout=layout) if layout == "resident" else None
        for b in range(2, 9):
            if layout == "fixed":
                qm = load(r.path, bits=b, device=args.device, dtype=torch.float16, layout="fixed")
            else:
                qm.set_bits(b)
            ref = copy.deepcopy(model).to(args.device)
            for name, qw in r.layers.items():
                ref.get_submodule(name).weight.data = qw.dequantize(b).to(torch.float32).to(args.device)
            with torch.no_grad():
                want = ref(x).logits.double()
                got = qm(x).logits.double()
            kernels = sum(1 for m in qm.modules() if isinstance(m, QuantLinear) and m._use_kernels(x.half()))
            err = float((got - want).norm() / want.norm())
            good = bool(torch.isfinite(got).all()) and err < 2e-2
            ok &= good
            print(f"{layout:8s} bits={b}: relative logit error {err:.2e} ({kernels} layers on Triton kernels) "
                  f"{'ok' if good else 'MISMATCH'}", flush=True)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
