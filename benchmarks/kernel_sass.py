"""Instructions per weight of a kernel's k-tile loop, compiled offline for sm_90 (no GPU needed).

    python benchmarks/kernel_sass.py                      # CUDA-core kernel, batch 1, fixed 2/3/4/6/8 bits
    python benchmarks/kernel_sass.py --kernel gemm --batch 16 --layouts fixed,resident
    python benchmarks/kernel_sass.py --kernel mma --bn 64 --warps 4   # tensor-core decode kernel
    python benchmarks/kernel_sass.py --kernel mma --bn 64 --warps 8 --ku 2   # two k-tiles per program

Compiles the Triton kernel for an H100 target (the installed Triton's bundled ptxas), reads the
registers and the SASS of the k-tile loop (the outermost backward branch), and prints the
instruction mix divided by the weights one thread handles per k-tile. The H100 figures in the
README were read with the Triton the device image runs (3.6); other Triton versions give other
counts. Writes JSON with --out.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
from collections import Counter

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from matgptq.kernels.dispatch import _consts, _with_raw
from matgptq.kernels.pack import KTILE, pack

BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
PTRS = {"X": "*fp16", "Q": "*i32", "S": "*fp16", "Z": "*u8", "OUT": "*fp16", "BIAS": "*fp16", "WS": "*fp32",
        "CNT": "*i32"}
FLOATS = {"C1", "C0", "ZOFF", "ZCONST", "LAM", "LMU"}


def compile_sm90(kernel: str, layout: str, bits: int, bm: int, bn: int, warps: int, stages: int = 1, ku: int = 1,
                 rule: str = "round", max_regs: int = 0, units_outer: int = 0, diag: int = 0):
    """The kernel as the dispatcher would launch it on a GPU (byte permutes on), for sm_90; ``ku``:
    the mma kernel's k-tiles loaded together; ``rule``: the slicing rule of the packed codes (the
    resident layout's ``round`` reads one more part than ``nested``); ``max_regs``: the register
    cap of :class:`~matgptq.kernels.configs.KernelConfig` (0: the compiler's choice)."""
    from matgptq.kernels import gemm, gemv, mma

    fn = {"gemv": gemv.gemv_kernel, "gemm": gemm.gemm_kernel, "mma": mma.mma_kernel}[kernel]
    q = torch.zeros(8, 1024, dtype=torch.uint8)
    pw = pack(q, torch.ones(8, 8).half(), torch.full((8, 8), 128, dtype=torch.uint8), master_bits=8,
              slicing=rule, group_size=128, layout=layout, bits=bits)
    c = _consts(pw, pw.read_plan(bits))
    c["PRMT"] = bits <= 7
    c = _with_raw(c) | dict(HAS_BIAS=False, EVEN=True)
    if kernel == "mma":
        c |= dict(RT=bn // 16, ASM=True, NS=stages, KU=ku, HB=1 if bm <= 8 else 2, UO=units_outer, DIAG=diag)
    else:
        c |= dict(BM=bm, BN=bn, NS=1)
        c |= dict(HALF2=bits == 8) if kernel == "gemv" else dict(HALF2=True, CODES=False, F32DOT=False)
    names = fn.arg_names
    sig = {n: "constexpr" if n in c else PTRS.get(n, "fp32" if n in FLOATS else "i32") for n in names}
    attrs = {(names.index(n),): [["tt.divisibility", 16]]
             for n in ("X", "stride_xm", "Q", "S", "Z", "OUT", "stride_om", "BIAS", "WS", "CNT", "N", "K")}
    src = ASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in c.items() if k in names},
                    attrs=attrs)
    options = dict(num_warps=warps, num_stages=1 if kernel == "mma" else stages) | (
        {"maxnreg": max_regs} if max_regs else {})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)


def loop_sass(compiled, keep=None) -> tuple[int, list[str]]:
    """Registers and the SASS instructions of the outermost loop (the largest backward-branch body;
    with ``keep``, the smallest body for which keep(body) holds, e.g. the loop with the mmas rather
    than a wait-retry branch around it)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "k.cubin")
        with open(path, "wb") as f:
            f.write(compiled.asm["cubin"])
        res = subprocess.run([os.path.join(BIN, "cuobjdump"), "-res-usage", path], capture_output=True, text=True).stdout
        sass = subprocess.run([os.path.join(BIN, "cuobjdump"), "-sass", path], capture_output=True, text=True).stdout
    regs = int(re.search(r"REG:(\d+)", res).group(1))
    ins = [(int(a, 16), t) for a, t in re.findall(r"/\*([0-9a-f]{4,})\*/\s+(.*?);", sass)]
    best: list[str] = []
    for addr, text in ins:
        m = re.search(r"BRA\s+(?:`\(\.L_x_\d+\)\s*)?0x([0-9a-f]+)", text)
        if m and int(m.group(1), 16) < addr:
            body = [t for a, t in ins if int(m.group(1), 16) <= a <= addr]
            if keep is None and len(body) > len(best):
                best = body
            elif keep is not None and keep(body) and (not best or len(body) < len(best)):
                best = body
    return regs, best


def loop_mix(compiled, keep=None) -> tuple[int, Counter]:
    """Registers and the opcode counts of the outermost loop (``keep``: see :func:`loop_sass`)."""
    regs, body = loop_sass(compiled, keep)
    return regs, Counter((t.split()[1] if t.startswith("@") else t.split()[0]).split(".")[0] for t in body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", choices=["gemv", "gemm", "mma"], default="gemv")
    ap.add_argument("--stages", type=int, default=1, help="mma: 2 double-buffers the codes in registers")
    ap.add_argument("--batch", type=int, default=1, help="rows of the activation tile (gemm: 16 or more)")
    ap.add_argument("--bn", type=int, default=64)
    ap.add_argument("--warps", type=int, default=4)
    ap.add_argument("--ku", type=int, default=1, help="mma: k-tiles loaded together (one per warp group)")
    ap.add_argument("--bits", default="2,3,4,6,8")
    ap.add_argument("--layouts", default="fixed")
    ap.add_argument("--rule", default="round", choices=["round", "nested"],
                    help="slicing rule (benchmarks/kernel_bench.py times nested codes)")
    ap.add_argument("--max-regs", type=int, default=0, help="register cap (Triton's maxnreg; 0: the compiler's choice)")
    ap.add_argument("--units-outer", type=int, default=0, help="mma: 1 runs the byte lanes inside the unit loop")
    ap.add_argument("--diag", type=int, default=0, help="mma: kernel_bounds.py's switch, streams read from the first "
                    "k-tiles (bit 0: activations, 1: codes, 2: scales and zeros; the same instructions)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    bm = 1 << max(0, (args.batch - 1).bit_length())
    if args.kernel == "gemm":
        bm = max(16, bm)
    rows = []
    print(f"triton {triton.__version__}, sm_90, {args.kernel} BM={bm} BN={args.bn} warps={args.warps}")
    for layout in args.layouts.split(","):
        for bits in (int(b) for b in args.bits.split(",")):
            regs, ops = loop_mix(compile_sm90(args.kernel, layout, bits, bm, args.bn, args.warps, args.stages,
                                              ku=args.ku, rule=args.rule, max_regs=args.max_regs,
                                              units_outer=args.units_outer, diag=args.diag))
            weights = args.bn * KTILE * args.ku // (32 * args.warps)  # per thread and k-tile
            per_w = {op: round(n / weights, 2) for op, n in ops.most_common(8)}
            total = round(sum(ops.values()) / weights, 2)
            spills = round((ops["LDL"] + ops["STL"]) / weights, 3)  # local-memory loads and stores
            rows.append(dict(layout=layout, bits=bits, registers=regs, per_weight=total, spills_per_weight=spills,
                             mix=per_w))
            print(f"{layout:8s} {bits}-bit  regs {regs:3d}  {total:5.2f} instructions per weight  "
                  f"spills {spills:.3f}  {per_w}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(triton=triton.__version__, kernel=args.kernel, bm=bm, bn=args.bn, warps=args.warps, ku=args.ku,
                           rule=args.rule, stages=args.stages, max_regs=args.max_regs,
                           units_outer=args.units_outer, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
