"""One quantized matmul launch to profile under Nsight Compute.

    ncu --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats \
        -k regex:gemv_kernel|gemm_kernel|mma_kernel|lop3_kernel --launch-skip 3 --launch-count 1 \
        python benchmarks/profile_kernel.py --shape 4096x14336 --bits 2 --batch 1

``--stalls CSV`` (no GPU) reads the per-instruction page of such a profile (``ncu -i REPORT
--page source --csv --print-source sass > CSV``, with ``--section SourceCounters``) and prints the
share of the sampled warp cycles by stall reason and by opcode.

Packs random master codes (group 128, symmetric), warms the chosen kernel up, then launches it
a few more times; the launch the profiler captures uses the same configuration as the benchmark
(the shipped tuned table, or the heuristic).
"""

from __future__ import annotations

import argparse

import torch

from matgptq.kernels import dispatch
from matgptq.kernels.configs import KernelConfig
from matgptq.kernels.dispatch import choose_config, run_config
from matgptq.kernels.pack import pack


def stall_shares(path: str) -> None:
    import collections
    import csv

    with open(path) as f:
        rows = list(csv.reader(f))
    head = next(i for i, r in enumerate(rows) if r and r[0] == "Address")
    cols, data = rows[head], [r for r in rows[head + 1:] if len(r) == len(rows[head])]
    reasons = [i for i, c in enumerate(cols) if c.startswith("stall_") and "Not Issued" not in c]
    by_reason, by_op = collections.Counter(), collections.Counter()
    for r in data:
        words = r[1].split()
        op = (words[1] if words and words[0].startswith("@") else (words[0] if words else "")).split(".")[0]
        for i in reasons:
            by_reason[cols[i][6:]] += int(r[i] or 0)
            by_op[op] += int(r[i] or 0)
    total = sum(by_reason.values())
    print(f"{path}: {total} samples")
    print("  by reason: " + ", ".join(f"{k} {100 * v / total:.1f} %" for k, v in by_reason.most_common(8)))
    print("  by opcode: " + ", ".join(f"{k} {100 * v / total:.1f} %" for k, v in by_op.most_common(8)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="4096x14336", help="out x in")
    ap.add_argument("--bits", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--layout", default="fixed", choices=["fixed", "resident", "lop3"])
    ap.add_argument("--rule", default="nested", choices=["nested", "round"])
    ap.add_argument("--config", default=None, help="a kernel config key (e.g. mma:bm8:bn64:sk4:w8:s1:ku2); "
                    "default: what the dispatcher chooses")
    ap.add_argument("--diag", type=int, default=0, choices=range(8),
                    help="the mma kernel's kernel_bounds.py switch (7: every stream from cache; wrong results)")
    ap.add_argument("--stalls", metavar="CSV", help="no GPU: stall shares of a saved ncu source page")
    args = ap.parse_args()
    if args.stalls:
        return stall_shares(args.stalls)
    dispatch.MMA_DIAG = args.diag
    n, k = (int(v) for v in args.shape.split("x"))
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randint(0, 256, (n, k), generator=g, device="cuda", dtype=torch.uint8)
    s = (torch.rand(n, k // 128, generator=g, device="cuda") * 0.02 + 1e-3).half()
    z = torch.full_like(s, 128, dtype=torch.uint8)
    pw = pack(q, s, z, master_bits=8, slicing=args.rule, group_size=128, layout=args.layout, bits=args.bits)
    x = torch.randn(args.batch, k, device="cuda", dtype=torch.float16)
    out = torch.empty(args.batch, n, device="cuda", dtype=torch.float16)
    cfg = KernelConfig.from_key(args.config) if args.config else choose_config(x, pw, args.bits)
    print(f"{args.shape} b{args.bits} {args.layout} batch {args.batch}: {cfg.key()}", flush=True)
    for _ in range(6):
        run_config(cfg, x, pw, args.bits, out, None)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
