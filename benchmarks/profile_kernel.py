"""One quantized matmul launch to profile under Nsight Compute.

    ncu --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats \
        -k regex:gemv_kernel|gemm_kernel|mma_kernel|lop3_kernel --launch-skip 3 --launch-count 1 \
        python benchmarks/profile_kernel.py --shape 4096x14336 --bits 2 --batch 1

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
    args = ap.parse_args()
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
