"""bf16 activations on each serving layout, as a user gets them: ``quant_matmul`` with the
dispatcher's own choice (tuned table, else heuristic) on the lop3, fixed and resident layouts,
against bf16 ``F.linear``, timed in one CUDA graph over rotating weight copies as kernel_bench.py
does. Checks each layout against float64 first (NaN-poisoned outputs).

    python benchmarks/bf16_layouts.py --out benchmarks/results --tag h200     # GPU
    python benchmarks/bf16_layouts.py --tune fixed,resident --batches 1,4,16 --tag h200t
    python benchmarks/bf16_layouts.py --summarize benchmarks/results/bf16_layouts_h200.json   # no GPU

Prints µs per layout and the speed against F.linear, writes bf16_layouts_TAG.json. ``--tune``:
for those layouts also every tuner candidate (``configs.candidates``; the mma kernel is fp16-only)
timed the same way, the best kept as ``LAYOUT_tuned_us`` and written in ``tuned.json``'s format
to tuned_bf16_TAG.json (rewritten after every point).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import kernel_bench as kb  # noqa: E402

from matgptq.kernels import configs  # noqa: E402
from matgptq.kernels.dispatch import _device_name, _sms, choose_config, fmt_key, quant_matmul, run_config  # noqa: E402
from matgptq.quant.grid import dequantize  # noqa: E402

LAYOUTS = ("lop3", "fixed", "resident")


def check(widths, n=512, k=2048):
    worst = 0.0
    for bits in widths:
        for layout in LAYOUTS:
            pw, (q, s, z) = kb.make_packed(n, k, bits, layout, "nested", 128, seed=bits)
            w = dequantize(q.cpu(), s.cpu(), z.cpu(), 8, bits, "nested", 128, torch.float64)
            for m in (1, 5, 16, 33):
                x = torch.randn(m, k, device="cuda").bfloat16()
                out = quant_matmul(x, pw, bits)
                ref = x.double().cpu() @ w.t()
                err = ((out.double().cpu() - ref).norm() / ref.norm()).item()
                if out.dtype != torch.bfloat16 or not torch.isfinite(out).all() or err > 1e-2:
                    raise SystemExit(f"{layout} {bits} bits batch {m}: relative error {err} ({out.dtype})")
                worst = max(worst, err)
    return worst


def summarize(result):
    """Each layout's speed against bf16 F.linear at batches 1-16 and from 32 (range), and with
    --tune the tuned launch's speed over the dispatcher's (median and range)."""
    rows = result["rows"]
    print(f"checks: worst relative error {result['check_worst_rel_err']:.2e}; {len(rows)} points")
    for lay in LAYOUTS:
        for label, sel in (("batch <= 16", [r for r in rows if r["batch"] <= 16]),
                           ("batch >= 32", [r for r in rows if r["batch"] >= 32])):
            if sel:
                q = [r["bf16_us"] / r[f"{lay}_us"] for r in sel]
                print(f"{lay:8s} {label}: {min(q):.2f}-{max(q):.2f}x the speed of bf16 F.linear ({len(q)} points)")
        if f"{lay}_tuned_us" in rows[0]:
            q = [r[f"{lay}_us"] / r[f"{lay}_tuned_us"] for r in rows]
            q1 = [r[f"{lay}_us"] / r[f"{lay}_tuned_us"] for r in rows if r["batch"] == 1]
            v = [r["bf16_us"] / r[f"{lay}_tuned_us"] for r in rows]
            print(f"{lay:8s} tuned: {statistics.median(q):.3f}x the dispatcher's speed in the median "
                  f"({min(q):.3f}-{max(q):.3f}x; batch 1 {min(q1):.3f}-{max(q1):.3f}x), {min(v):.2f}-{max(v):.2f}x "
                  "the speed of bf16 F.linear")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="4096x14336,14336x4096,8192x8192")
    ap.add_argument("--bits", default="2,3,4")
    ap.add_argument("--batches", default="1,4,16,32")
    ap.add_argument("--tune", default="", help="layouts to tune (fixed, resident)")
    ap.add_argument("--summarize", metavar="JSON", help="no GPU: print the summary of a saved run")
    ap.add_argument("--out", default=None)
    ap.add_argument("--tag", default="h200")
    args = ap.parse_args()
    if args.summarize:
        with open(args.summarize) as f:
            return summarize(json.load(f))
    widths = [int(b) for b in args.bits.split(",")]
    worst = check(widths)
    print(f"checks: worst relative error {worst:.2e}", flush=True)
    rows, tuned = [], {}
    tune = [t for t in args.tune.split(",") if t]
    for shape in args.shapes.split(","):
        n, k = (int(v) for v in shape.split("x"))
        w16 = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(kb.copies_for(2 * n * k))]
        for bits in widths:
            packs = {}
            for layout in LAYOUTS:
                pw0, _ = kb.make_packed(n, k, bits, layout, "nested", 128, seed=bits)
                packs[layout] = [pw0] + [kb.clone_packed(pw0) for _ in range(kb.copies_for(pw0.bytes_read(bits)) - 1)]
            for m in (int(b) for b in args.batches.split(",")):
                x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
                row = dict(shape=shape, bits=bits, batch=m,
                           bf16_us=round(kb.graph_time([lambda w=w: F.linear(x, w) for w in w16]), 2))
                for layout, pws in packs.items():
                    row[f"{layout}_config"] = choose_config(x, pws[0], bits).key()
                    row[f"{layout}_us"] = round(kb.graph_time([lambda p=p: quant_matmul(x, p, bits) for p in pws]), 2)
                for layout in tune:
                    pws = packs[layout]
                    outs = [torch.empty(m, n, device="cuda", dtype=torch.bfloat16) for _ in pws]
                    tried = {}
                    for cfg in configs.candidates(n, pws[0].k_tiles, m, _sms(x.device), False, bits):
                        try:
                            tried[cfg] = kb.graph_time([lambda p=p, o=o, c=cfg: run_config(c, x, p, bits, o, None)
                                                        for p, o in zip(pws, outs)])
                        except Exception as e:  # as the autotuner does: a candidate that fails is skipped
                            print(f"  {cfg.key()} skipped: {repr(e)[:100]}", flush=True)
                    best = min(tried, key=tried.get)
                    row[f"{layout}_tuned_us"], row[f"{layout}_tuned_config"] = round(tried[best], 2), best.key()
                    tuned[configs.table_key(_device_name(x.device), n, k, m, fmt_key(pws[0], bits, x.dtype))] = \
                        best.__dict__.copy()
                rows.append(row)
                print(f"{shape:>11} b{bits} m{m:<3} bf16 {row['bf16_us']:7.2f} µs  " + "  ".join(
                    f"{lay} {row[f'{lay}_us']:7.2f} ({row['bf16_us'] / row[f'{lay}_us']:.2f}x, {row[f'{lay}_config']})"
                    for lay in LAYOUTS) + "".join(f"  {lay} tuned {row[f'{lay}_tuned_us']:7.2f} "
                                                  f"({row['bf16_us'] / row[f'{lay}_tuned_us']:.2f}x, "
                                                  f"{row[f'{lay}_tuned_config']})" for lay in tune), flush=True)
                if args.out:
                    os.makedirs(args.out, exist_ok=True)
                    path = os.path.join(args.out, f"bf16_layouts_{args.tag}.json")
                    with open(path + ".tmp", "w") as f:
                        json.dump(dict(check_worst_rel_err=worst, rows=rows), f, indent=1)
                    os.replace(path + ".tmp", path)
                    if tuned:
                        path = os.path.join(args.out, f"tuned_bf16_{args.tag}.json")
                        with open(path + ".tmp", "w") as f:
                            json.dump(tuned, f, indent=1)
                        os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
