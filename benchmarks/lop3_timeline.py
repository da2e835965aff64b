"""Where a lop3 kernel launch spends its time: every program's phase timestamps, on the GPU.

    python benchmarks/lop3_timeline.py --shapes 4096x14336,14336x4096,8192x8192 --bits 2,3,4 --out benchmarks/results --tag h100
    python benchmarks/lop3_timeline.py --summarize benchmarks/results/lop3_timeline_h100.json   # no GPU

The kernel's timeline variant (``TL``: four timer reads by thread 0, nothing else changes;
``tests/test_lop3.py`` checks that offline) stamps each program at its start, after the prologue
(its activation block and first ring groups landed, the CTA barrier passed), after the loop (the
last group decoded, the copies drained) and after the finish (its split-K partial, the counter,
and for the last program of a row tile the sum and the store). The launches run as
``kernel_bench.py`` times them: rotating weight copies in one CUDA graph, back to back; the
stamps read are those of a launch in the middle. Times come from ``%globaltimer`` (one clock for
the whole GPU), cycles from ``%clock64`` (each SM's own). Also timed: the same launch without the
stamps (``us``) and with them (``us_tl``), so the instrumentation's own cost shows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kernel_bench as kb  # noqa: E402  (graph timing, packing helpers)

from matgptq.checkpoint.atomic import write_json  # noqa: E402

PHASES = ("prologue", "loop", "finish")


def _pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))]


def phases(buf) -> dict:
    """A launch's timeline (rows: programs; columns: globaltimer ns and clock64 of phases 0-3,
    then the SM id twice) summed up: the launch's span (first start to last finish), how late the
    programs start after the first one, each phase's median and 90th percentile in µs (timer)
    and cycles (clock64), the tail (last loop end to last finish) and programs per SM."""
    rows = [list(map(int, r)) for r in buf]
    g = [[r[2 * p] for p in range(4)] for r in rows]
    c = [[r[2 * p + 1] for p in range(4)] for r in rows]
    t0 = min(x[0] for x in g)
    out = dict(programs=len(rows), span_us=(max(x[3] for x in g) - t0) / 1e3,
               start_late_us_median=statistics.median(x[0] - t0 for x in g) / 1e3,
               start_late_us_max=max(x[0] - t0 for x in g) / 1e3,
               tail_us=(max(x[3] for x in g) - max(x[2] for x in g)) / 1e3)
    for p, name in enumerate(PHASES):
        dt = [x[p + 1] - x[p] for x in g]
        dc = [x[p + 1] - x[p] for x in c]
        out[f"{name}_us_median"] = statistics.median(dt) / 1e3
        out[f"{name}_us_p90"] = _pct(dt, 0.9) / 1e3
        out[f"{name}_cycles_median"] = statistics.median(dc)
    per_sm = {}
    for r in rows:
        per_sm[r[8]] = per_sm.get(r[8], 0) + 1
    out["sms_used"] = len(per_sm)
    out["programs_per_sm_max"] = max(per_sm.values())
    return out


def time_point(n, k, bits, m, config):
    from matgptq.kernels import lop3_kernel
    from matgptq.kernels.configs import KernelConfig
    from matgptq.kernels.dispatch import choose_config, launch_lop3, run_config

    pw0, _ = kb.make_packed(n, k, bits, "lop3", "nested", 128, seed=bits)
    pws = [pw0] + [kb.clone_packed(pw0) for _ in range(kb.copies_for(pw0.bytes_read(bits)) - 1)]
    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    outs = [torch.empty(m, n, device="cuda", dtype=torch.float16) for _ in pws]
    cfg = KernelConfig.from_key(config) if config else choose_config(x, pw0, bits)
    if cfg.kind != "lop3" or m > lop3_kernel.MAX_M:
        raise SystemExit(f"{n}x{k} b{bits} m{m}: the launch is {cfg.key()}, not the lop3 kernel's one launch; "
                         "pass --config lop3:... and at most 16 rows")
    progs = lop3_kernel.timeline_programs(n, k, cfg.num_warps, cfg.split_k, cfg.k_unroll)
    tls = [torch.zeros(progs, 10, dtype=torch.int64, device="cuda") for _ in pws]
    us = kb.graph_time([lambda p=p, o=o: run_config(cfg, x, p, bits, o, None) for p, o in zip(pws, outs)])
    us_tl = kb.graph_time([lambda p=p, o=o, t=t: launch_lop3(x, p, bits, o, None, cfg, t)
                           for p, o, t in zip(pws, outs, tls)])
    row = dict(shape=f"{n}x{k}", bits=bits, batch=m, config=cfg.key(), us=round(us, 2), us_tl=round(us_tl, 2),
               bytes=pw0.bytes_read(bits) + 2 * m * k + 2 * m * n)  # as benchmarks/lop3.py counts them
    row.update({k_: round(v, 3) if isinstance(v, float) else v for k_, v in phases(tls[len(tls) // 2].cpu()).items()})
    return row


def show(rows):
    print(f"{'point':24s} {'config':26s} {'us':>6s} {'us_tl':>6s} {'span':>6s} {'gap':>5s} {'late':>5s} "
          + " ".join(f"{p:>13s}" for p in PHASES) + f" {'tail':>5s} {'loop TB/s':>9s} {'SMs':>4s} {'max/SM':>6s}")
    for r in rows:
        ph = " ".join(f"{r[p + '_us_median']:6.2f}/{r[p + '_us_p90']:6.2f}" for p in PHASES)
        rate = f"{r['bytes'] / r['loop_us_median'] / 1e6:9.2f}" if "bytes" in r else f"{'-':>9s}"
        print(f"{r['shape']:>11s} b{r['bits']} m{r['batch']:<8d} {r['config']:26s} {r['us']:6.2f} {r['us_tl']:6.2f} "
              f"{r['span_us']:6.2f} {r['us'] - r['span_us']:5.2f} {r['start_late_us_max']:5.2f} {ph} "
              f"{r['tail_us']:5.2f} {rate} {r['sms_used']:4d} {r['programs_per_sm_max']:6d}", flush=True)
    print("(µs; gap: the launch's graph time outside its programs' span; late: the last program's start after "
          "the first; phases: median / 90th percentile over the programs; tail: last loop end to last finish; "
          "loop TB/s: the launch's bytes over the median loop time)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="4096x14336,14336x4096,8192x8192")
    ap.add_argument("--bits", default="2,3,4")
    ap.add_argument("--batches", default="1")
    ap.add_argument("--config", default=None, help="lop3 launch keys, comma-separated, each timed at every point "
                    "(default: the table's or the heuristic's)")
    ap.add_argument("--summarize", metavar="JSON", help="no GPU: print a saved run")
    ap.add_argument("--out", default=None)
    ap.add_argument("--tag", default="h100")
    args = ap.parse_args()
    if args.summarize:
        with open(args.summarize) as f:
            return show(json.load(f)["rows"])
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/lop3_timeline.py needs a GPU (the lop3 kernel is CUDA only); "
                         "--summarize JSON reads a saved run")
    rows = []
    for shape in args.shapes.split(","):
        n, k = (int(v) for v in shape.split("x"))
        for bits in (int(b) for b in args.bits.split(",")):
            for m in (int(b) for b in args.batches.split(",")):
                for config in args.config.split(",") if args.config else [None]:
                    rows.append(time_point(n, k, bits, m, config))
                    show(rows[-1:])
                    if args.out:  # after every point, atomically
                        os.makedirs(args.out, exist_ok=True)
                        write_json(os.path.join(args.out, f"lop3_timeline_{args.tag}.json"),
                                   dict(device=torch.cuda.get_device_name(), rows=rows))


if __name__ == "__main__":
    main()
