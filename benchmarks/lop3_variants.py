"""The lop3 kernel under the values of one of its experiment switches (an environment variable
read at launch: MATGPTQ_LOP3_CHAINS, the independent mma chains a group: 1, 2 or 4), the same
launches timed in one CUDA graph as kernel_bench.py does. Checks every value against float64
first.

    python benchmarks/lop3_variants.py --var MATGPTQ_LOP3_CHAINS --values 1,2,4 --out benchmarks/results --tag h200

Prints µs and % of the copy bandwidth measured in the run per value and writes
lop3_variants_TAG.json. (Commit c7137c0's benchmarks/lop3_pdl.py timed MATGPTQ_PDL this way.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import kernel_bench as kb  # noqa: E402

from matgptq.kernels.dispatch import choose_config, run_config  # noqa: E402
from matgptq.quant.grid import dequantize  # noqa: E402


def check(var, modes, n=512, k=2048):
    worst = 0.0
    for bits in (2, 3, 4):
        pw, (q, s, z) = kb.make_packed(n, k, bits, "lop3", "nested", 128, seed=bits)
        w = dequantize(q.cpu(), s.cpu(), z.cpu(), 8, bits, "nested", 128, torch.float64)
        for mode in modes:
            os.environ[var] = str(mode)
            for m in (1, 5, 16):
                x = torch.randn(m, k, device="cuda").half()
                out = torch.full((m, n), float("nan"), device="cuda", dtype=torch.float16)
                run_config(choose_config(x, pw, bits), x, pw, bits, out, None)
                ref = x.double().cpu() @ w.t()
                err = ((out.double().cpu() - ref).norm() / ref.norm()).item()
                if not torch.isfinite(out).all() or err > 2e-3:
                    raise SystemExit(f"{var}={mode}, {bits} bits, batch {m}: relative error {err}")
                worst = max(worst, err)
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="4096x14336,14336x4096,8192x8192,16384x16384")
    ap.add_argument("--bits", default="2,3,4")
    ap.add_argument("--batches", default="1,4,16")
    ap.add_argument("--var", default="MATGPTQ_LOP3_CHAINS")
    ap.add_argument("--values", default="1,2,4")
    ap.add_argument("--out", default=None)
    ap.add_argument("--tag", default="h200")
    args = ap.parse_args()
    modes = [int(v) for v in args.values.split(",")]
    var = args.var
    worst = check(var, modes)
    print(f"checks: worst relative error {worst:.2e}", flush=True)
    bw, _ = kb.copy_bandwidth()
    rows = []
    for shape in args.shapes.split(","):
        n, k = (int(v) for v in shape.split("x"))
        for bits in (int(b) for b in args.bits.split(",")):
            pw0, _ = kb.make_packed(n, k, bits, "lop3", "nested", 128, seed=bits)
            pws = [pw0] + [kb.clone_packed(pw0) for _ in range(kb.copies_for(pw0.bytes_read(bits)) - 1)]
            for m in (int(b) for b in args.batches.split(",")):
                x = torch.randn(m, k, device="cuda", dtype=torch.float16)
                outs = [torch.empty(m, n, device="cuda", dtype=torch.float16) for _ in pws]
                cfg = choose_config(x, pw0, bits)
                need = pw0.bytes_read(bits) + 2 * m * k + 2 * m * n
                row = dict(shape=shape, bits=bits, batch=m, config=cfg.key(), bytes=need)
                for mode in modes:
                    os.environ[var] = str(mode)
                    t = kb.graph_time([lambda p=p, o=o: run_config(cfg, x, p, bits, o, None) for p, o in zip(pws, outs)])
                    row[f"us_{mode}"] = round(t, 2)
                    row[f"pct_copy_{mode}"] = round(100 * need / (t * 1e-6) / bw, 1)
                rows.append(row)
                print(f"{shape:>11} b{bits} m{m:<3} {cfg.key():28s} "
                      + "  ".join(f"{mo}: {row[f'us_{mo}']:7.2f} µs ({row[f'pct_copy_{mo}']:5.1f} %)"
                                  for mo in modes), flush=True)
                if args.out:
                    os.makedirs(args.out, exist_ok=True)
                    path = os.path.join(args.out, f"lop3_variants_{args.tag}.json")
                    with open(path + ".tmp", "w") as f:
                        json.dump(dict(var=var, copy_bw_GBps=round(bw / 1e9, 1), check_worst_rel_err=worst, rows=rows), f,
                                  indent=1)
                    os.replace(path + ".tmp", path)
    os.environ.pop(var, None)


if __name__ == "__main__":
    main()
