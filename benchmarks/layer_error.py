"""Relative layer-output error ‖WX − ŴX‖ / ‖WX‖ of every slice, per method, on one layer.

    python benchmarks/layer_error.py [--rows 256 --cols 1024 --tokens 8192]

Inputs are correlated like an LLM's (decaying spectrum, a few outlier channels); weights are
Gaussian. Methods: RTN at b, GPTQ at b, GPTQ-8 then sliced, MatGPTQ {8,4,3} (both slicing rules)
and MatQuant-style RTN {8,4,3} (the same objective with no error feedback). Prints a table and
writes JSON.
"""

from __future__ import annotations

import argparse
import json

import torch

from matgptq.quant import HessianAccumulator, QuantConfig, quantize_layer

WIDTHS = (8, 6, 4, 3, 2)


def correlated_inputs(n: int, c: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(c, c, generator=g))
    x = (torch.randn(n, c, generator=g) * torch.logspace(0, -2, c)) @ basis.T
    x[:, :4] *= 10
    return x


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=256)
    p.add_argument("--cols", type=int, default=1024)
    p.add_argument("--tokens", type=int, default=8192)
    p.add_argument("--group-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="layer_error.json")
    args = p.parse_args()

    x = correlated_inputs(args.tokens, args.cols, args.seed)
    w = torch.randn(args.rows, args.cols, generator=torch.Generator().manual_seed(args.seed + 1)) * 0.02
    acc = HessianAccumulator(args.cols)
    acc.add(x)
    ref = w.double() @ x.double().T

    def error(what: torch.Tensor) -> float:
        return float((ref - what.double() @ x.double().T).norm() / ref.norm())

    gs = args.group_size
    table: dict[str, dict[int, float]] = {}
    for b in WIDTHS:
        table.setdefault("RTN at b", {})[b] = error(
            quantize_layer(w, None, QuantConfig(method="rtn", bits=b, group_size=gs)).dequantize(b))
        table.setdefault("GPTQ at b", {})[b] = error(
            quantize_layer(w, acc, QuantConfig(method="gptq", bits=b, group_size=gs)).dequantize(b))
    parents = {
        "GPTQ-8 sliced": QuantConfig(method="gptq", bits=8, group_size=gs),
        "RTN {8,4,3}": QuantConfig(method="rtn", bits=(8, 4, 3), group_size=gs),
        "MatGPTQ {8,4,3} round": QuantConfig(method="matgptq", bits=(8, 4, 3), group_size=gs),
        "MatGPTQ {8,4,3} nested": QuantConfig(method="matgptq", bits=(8, 4, 3), group_size=gs, slicing="nested"),
    }
    for name, cfg in parents.items():
        qw = quantize_layer(w, None if cfg.method == "rtn" else acc, cfg)
        table[name] = {b: error(qw.dequantize(b)) for b in WIDTHS}

    print(f"\nRelative output error, layer {args.rows}x{args.cols} (out x in), group {gs}, "
          f"{args.tokens} correlated tokens, seed {args.seed}")
    print(f"{'method':<24}" + "".join(f"{b:>9}-bit" for b in WIDTHS))
    for name, row in table.items():
        print(f"{name:<24}" + "".join(f"{row[b]:>13.4f}" for b in WIDTHS))
    with open(args.out, "w") as f:
        json.dump({"args": vars(args), "error": table}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
