"""What holds a batch-1 mma launch back: the launch timed as is and with each memory stream
served from cache.

    python benchmarks/kernel_bounds.py --out DIR          # tuned launches, 2/3/4/8 bits
    python benchmarks/kernel_bounds.py --shapes 4096x14336 --bits 2 --config mma:bm8:bn64:sk2:w8:s3:ku2

The mma kernel's ``DIAG`` switch (``dispatch.MMA_DIAG``; wrong results, timing only) keeps every
instruction but reads a stream from the program's first k-tiles on every iteration, so after the
first it hits in L1 / L2: bit 0 the activations, bit 1 the codes, bit 2 the scales and zeros.
If "all cached" is close to "as is", the instructions and their dependency chains set the time,
not the memory; if "codes cached" is far below it, the code stream does. Rotating weight copies
and CUDA graphs as in ``kernel_bench.py``; "plain read" is its streaming read of the same bytes.
Prints a table and writes ``kernel_bounds_TAG.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kernel_bench as kb  # noqa: E402  (the benchmark's packing, timing and read helpers)

VARIANTS = {"as is": 0, "x cached": 1, "codes cached": 2, "scales cached": 4, "x+codes cached": 3,
            "all cached": 7}


def time_diag(cfg, x, copies, outs, bits, diag):
    from matgptq.kernels import dispatch

    dispatch.MMA_DIAG = diag
    try:
        calls = [lambda p=p, o=o: dispatch.run_config(cfg, x, p, bits, o, None) for p, o in zip(copies, outs)]
        return statistics.median(kb.graph_time(calls) for _ in range(3))
    finally:
        dispatch.MMA_DIAG = 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="4096x14336,14336x4096,8192x8192,16384x16384")
    ap.add_argument("--bits", default="2,3,4,8")
    ap.add_argument("--config", default=None, help="an mma config key for every point (default: the tuned table)")
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--tag", default="h200")
    args = ap.parse_args()
    from matgptq.kernels.configs import KernelConfig
    from matgptq.kernels.dispatch import choose_config

    try:
        shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
        bitsl = [int(b) for b in args.bits.split(",")]
    except ValueError:
        raise SystemExit(f"--shapes {args.shapes!r} --bits {args.bits!r}: write shapes as OUTxIN joined by commas "
                         "(4096x14336,14336x4096) and widths as integers (2,4)") from None
    fixed = KernelConfig.from_key(args.config) if args.config else None
    if fixed is not None and fixed.kind != "mma":
        raise SystemExit(f"--config {args.config}: the switch is the mma kernel's; pass an mma key "
                         "(mma:bm8:bn64:sk2:w8:s3:ku2)")
    if not torch.cuda.is_available():
        raise SystemExit("kernel_bounds.py times GPU launches: run it on a CUDA device")
    bw, _ = kb.copy_bandwidth()
    print(f"copy bandwidth {bw / 1e9:.0f} GB/s", flush=True)
    rows = []
    head = f"{'shape':>11} {'b':>2} {'config':34s}" + "".join(f"{v:>15s}" for v in VARIANTS) + f"{'plain read':>12s}"
    print(head, flush=True)
    for n, k in shapes:
        for bits in bitsl:
            pw0, _ = kb.make_packed(n, k, bits, "fixed", "nested", 128, seed=bits)
            nbytes = pw0.bytes_read(bits)
            copies = [pw0] + [kb.clone_packed(pw0) for _ in range(kb.copies_for(nbytes) - 1)]
            x = torch.randn(1, k, device="cuda", dtype=torch.float16)
            outs = [torch.empty(1, n, device="cuda", dtype=torch.float16) for _ in copies]
            cfg = fixed or choose_config(x, pw0, bits)
            if cfg.kind != "mma":
                print(f"{n}x{k} b{bits}: skipped, the tuned table serves it with {cfg.key()}, not an mma launch; "
                      "pass --config with an mma key to time one", flush=True)
                continue
            us = {name: round(time_diag(cfg, x, copies, outs, bits, d), 2) for name, d in VARIANTS.items()}
            need = nbytes + 2 * k + 2 * n
            read = round(kb.read_time(need), 2)
            rows.append(dict(shape=f"{n}x{k}", bits=bits, config=cfg.key(), bytes=need, us=us, read_us=read,
                             pct_copy=round(100 * need / (us["as is"] * 1e-6) / bw, 1)))
            print(f"{n:>5}x{k:<5} {bits:>2} {cfg.key():34s}" + "".join(f"{t:15.2f}" for t in us.values())
                  + f"{read:12.2f}", flush=True)
            del copies, pw0
            torch.cuda.empty_cache()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"kernel_bounds_{args.tag}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), copy_bw_GBps=bw / 1e9, variants=VARIANTS, rows=rows), f,
                  indent=1)
    os.replace(path + ".tmp", path)
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
