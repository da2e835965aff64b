"""Time the solver on one layer: MatGPTQ {3,4,8} and GPTQ-4 (and RTN), group 128, sym.

    python benchmarks/solver.py                       # CPU: 1024x4096 (in = 4096)
    python benchmarks/solver.py --device cuda         # GPU: 4096x14336 (in = 14336)

Prints a table (median of --repeat runs after a warm-up) and writes JSON (--out). The time is
that of ``quantize_layer`` from a ready Hessian: damping, the Cholesky factor of H⁻¹, the
column loop with lazy block updates, and packing the result. On CUDA the table also shows the
plain-torch per-column loop and how many codes it disagrees on with the fused kernel.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

import matgptq
from matgptq.quant import HessianAccumulator, QuantConfig, quantize_layer
from matgptq.quant.gptq import inverse_cholesky_upper


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device, repeat):
    fn()  # warm-up: kernel compilation, cuBLAS/cuSOLVER handles
    _sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--rows", type=int, default=None, help="out features")
    p.add_argument("--cols", type=int, default=None, help="in features")
    p.add_argument("--tokens", type=int, default=None, help="calibration tokens for H")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", default="solver_bench.json")
    p.add_argument("--skip-torch-loop", action="store_true", help="on CUDA, skip the slow torch loop")
    args = p.parse_args()

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    rows = args.rows or (4096 if gpu else 1024)
    cols = args.cols or (14336 if gpu else 4096)
    tokens = args.tokens or (2 * cols)
    g = torch.Generator(device=device).manual_seed(0)
    w = torch.randn(rows, cols, device=device, generator=g) * 0.02
    mix = torch.randn(cols, cols, device=device, generator=g) / cols**0.5
    acc = HessianAccumulator(cols, device=device)
    for chunk in range(0, tokens, 4096):  # correlated activations
        n = min(4096, tokens - chunk)
        acc.add(torch.randn(n, cols, device=device, generator=g) @ mix + torch.randn(n, cols, device=device, generator=g))
    del mix

    configs = {
        "MatGPTQ {8,4,3}": QuantConfig(method="matgptq", bits=(8, 4, 3), group_size=128, sym=True),
        "GPTQ-4": QuantConfig(method="gptq", bits=4, group_size=128, sym=True),
        "RTN-4": QuantConfig(method="rtn", bits=4, group_size=128, sym=True),
    }
    backends = ["auto"] + (["torch"] if gpu and not args.skip_torch_loop else [])
    results = []
    t_chol, _ = _time(lambda: inverse_cholesky_upper(acc.hessian, 0.01, 0), device, args.repeat)
    for name, cfg in configs.items():
        reference_codes = None
        for backend in backends:
            if cfg.method == "rtn" and backend != "auto":
                continue
            reps = args.repeat if backend == "auto" else 1
            t, qw = _time(lambda: quantize_layer(w, acc, cfg, backend=backend), device, reps)
            row = {"method": name, "backend": "triton" if (gpu and backend == "auto") else "torch",
                   "seconds": t, "loss": qw.stats.loss}
            if reference_codes is None:
                reference_codes = qw.codes
            else:
                row["code_mismatch_vs_kernel"] = (qw.codes != reference_codes).float().mean().item()
            results.append(row)

    env = {
        "device": torch.cuda.get_device_name(device) if gpu else platform.processor() or "cpu",
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "matgptq": matgptq.__version__, "shape": f"{rows}x{cols} (out x in)", "tokens": tokens,
        "cholesky_seconds": t_chol,
    }
    print(f"\nSolver timing on {env['device']}: layer {env['shape']}, group 128, sym, "
          f"median of {args.repeat}; factor of H^-1 alone: {t_chol * 1e3:.1f} ms")
    print(f"{'method':<18}{'loop':<8}{'seconds':>10}{'gptq loss':>14}{'codes != kernel':>18}")
    for r in results:
        mm = r.get("code_mismatch_vs_kernel")
        print(f"{r['method']:<18}{r['backend']:<8}{r['seconds']:>10.3f}{r['loss']:>14.4g}"
              f"{'' if mm is None else f'{mm:.2e}':>18}")
    with open(args.out, "w") as f:
        json.dump({"env": env, "results": results}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
