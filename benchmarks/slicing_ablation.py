"""Slicing rule alone, no error feedback: RTN to 8 bits, then each slice under `round` and
`nested`, on the small real model (the settings of benchmarks/quality.py). Also prints the
per-layer relative weight error of both 3-bit slices, to separate weight error from its effect,
and the nested 3-bit model with the two bins next to zero dequantized to 0 (the zero-level check).

    python benchmarks/slicing_ablation.py [--eval-windows 40]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import transformers

from matgptq.data import eval_tokens
from matgptq.demo import smollm2_model_dir
from matgptq.eval import perplexity
from matgptq.models.traverse import find_blocks, find_linears
from matgptq.quant import QuantConfig, quantize_layer

OUT = Path(__file__).parent / "results" / "slicing_ablation_smollm2.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eval-windows", type=int, default=40)
    ap.add_argument("--group-size", type=int, default=64)
    args = ap.parse_args()
    d = smollm2_model_dir()
    tok = transformers.AutoTokenizer.from_pretrained(d)
    model = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    test = eval_tokens(tok, "sotu")
    orig = {n: p.detach().clone() for n, p in model.named_parameters()}
    prefix, blocks = find_blocks(model)
    names = [f"{prefix}.{k}.{n}" for k, blk in enumerate(blocks) for n in find_linears(blk)]
    report = {"model": "SmolLM2-135M-Instruct (GGUF Q4_1)", "group_size": args.group_size,
              "eval": {"text": "sotu held-out", "seq_len": 512, "windows": args.eval_windows}, "perplexity": {},
              "weight_error_3bit": {}}
    for rule in ("round", "nested"):
        cfg = QuantConfig(method="rtn", bits=8, group_size=args.group_size, slicing=rule)
        layers = {n: quantize_layer(orig[f"{n}.weight"], None, cfg) for n in names}
        errs = [float((qw.dequantize(3).float() - orig[f"{n}.weight"]).norm() / orig[f"{n}.weight"].norm())
                for n, qw in layers.items()]
        report["weight_error_3bit"][rule] = {"mean": sum(errs) / len(errs), "max": max(errs)}
        row = report["perplexity"].setdefault(f"RTN-8 then sliced ({rule})", {})
        for b in (8, 6, 4, 3):
            for n, qw in layers.items():
                model.get_submodule(n).weight.data = qw.dequantize(b).float()
            row[str(b)] = perplexity(model, test, 512, 1, args.eval_windows)["perplexity"]
            print(f"RTN-8 then sliced ({rule}) b={b}: {row[str(b)]:.2f}", flush=True)
        print(f"  3-bit relative weight error over {len(errs)} layers: mean {report['weight_error_3bit'][rule]['mean']:.4f}",
              flush=True)
    # the zero-level check: nested 3-bit, but the codes of the two bins next to zero
    # (|q - 128| < 16, i.e. |w| < 16 s) dequantize to 0 instead of +15.5 s / -16.5 s
    cfg = QuantConfig(method="rtn", bits=8, group_size=args.group_size, slicing="nested")
    for n in names:
        qw = quantize_layer(orig[f"{n}.weight"], None, cfg)
        w3 = qw.dequantize(3).float()
        q = qw.codes.long()
        near = (q >= 112) & (q < 144)
        model.get_submodule(n).weight.data = torch.where(near, torch.zeros_like(w3), w3)
    v = perplexity(model, test, 512, 1, args.eval_windows)["perplexity"]
    report["perplexity"]["RTN-8 then sliced (nested), near-zero bins on 0"] = {"3": v}
    print(f"RTN-8 then sliced (nested), near-zero bins on 0, b=3: {v:.2f}", flush=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
