"""The lop3 layout on the GPU: correctness checks, then timings against the fixed layout's tuned
kernels, fp16 ``F.linear`` and dequantize + cuBLAS, at the issue's shapes and batches.

    python benchmarks/lop3.py --out benchmarks/results --tag h200          # GPU: checks, then time
    python benchmarks/lop3.py --checks-only                               # GPU: the checks alone
    PYTHONPATH=<Triton 3.6>:src python benchmarks/lop3.py --sass          # offline: sm_90 SASS counts
    python benchmarks/lop3.py --summarize benchmarks/results/lop3_h200d.json   # a saved run's summary
    python benchmarks/lop3.py --variants benchmarks/results/lop3_pdl_h200.json # a variant run's ratios
    python benchmarks/lop3.py --batches 1 --no-check --ab LAST_SPLIT_SUMS PDL --ab-top 4  # GPU: switches flipped

Checks (NaN-poisoned outputs, float64 reference): the --bits widths, both slicing rules, with and
without bias, fp16 batches 1, 2, 3, 5, 7, 8, 9, 16, 20, 33 and 100 and bf16 batches 9 and 33
(the dispatcher's choice: the Gluon kernel, the tensor-core kernel, dequantize + cuBLAS), the
tuner's candidates at batches 3, 9 and 33 and five more lop3-kernel launch shapes (1-4 warps, 2-8
stages, splits 1-16, one that leaves a short last range; launches of 16 and of 8 rows; the last
three with PDL and the L2 prefetch) at batches 3, 9 and 20. Timings: every lop3 launch the tuner would try (each point's
best kept; ``tuned_lop3_TAG.json`` holds them in ``tuned.json``'s format; both files are
rewritten after every point), against the library's
fixed layout with its table's launch (``choose_config``), rotating copies of the weight in one
CUDA graph as ``kernel_bench.py`` does; a point's time (``us``) is, as there, the median of the
search's time of its best launch and two more graphs of it (``search_us``: the search's). ``pct_copy``: bytes (codes, scales, activations, output) per
second against the copy bandwidth measured in the run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import kernel_bench as kb  # noqa: E402  (graph timing, copy bandwidth, packing helpers)

from matgptq.kernels import configs, lop3_kernel  # noqa: E402
from matgptq.kernels.configs import KernelConfig  # noqa: E402
from matgptq.kernels.dispatch import (_device_name, _sms, choose_config, dequantize_triton, fmt_key,  # noqa: E402
                                      run_config)
from matgptq.quant.grid import dequantize  # noqa: E402


def check(widths=(2, 3, 4), n=512, k=2048):
    """Worst relative error over the checks (inf when one fails or leaves an element unwritten)."""
    worst, fails = 0.0, []
    sms = _sms(torch.device("cuda"))
    for bits in widths:
        for rule in ("round", "nested"):
            pw, (q, s, z) = kb.make_packed(n, k, bits, "lop3", rule, 128, seed=bits)
            w = dequantize(q.cpu(), s.cpu(), z.cpu(), 8, bits, rule, 128, torch.float64)
            for m, dt in [(m, torch.float16) for m in (1, 2, 3, 5, 7, 8, 9, 16, 20, 33, 100)] + [(9, torch.bfloat16),
                                                                                                  (33, torch.bfloat16)]:
                x = torch.randn(m, k, device="cuda").to(dt)
                for bias in (None, torch.randn(n, device="cuda").to(dt)):
                    cfgs = [choose_config(x, pw, bits, bias)]
                    if m in (3, 9, 33) and bias is None:  # more launch shapes: warps, stages, splits
                        cfgs += configs.lop3_candidates(n, k // 128, m, sms, bits, dt == torch.float16)
                    if m in (3, 9, 20) and bias is None and dt == torch.float16:
                        cfgs += [KernelConfig("lop3", bm=bm, split_k=sk, num_warps=w, num_stages=st)
                                 for w, st, sk in ((4, 4, 1), (2, 4, 4), (1, 2, 16), (4, 8, 2), (2, 3, 3))
                                 for bm in ((16, 8) if m > 8 else (16,))]
                        cfgs += configs.lop3_overlap_variants(cfgs[-3:])  # PDL, L2 prefetch: a short last range too
                    for cfg in cfgs:
                        out = torch.full((m, n), float("nan"), device="cuda", dtype=dt)
                        try:
                            run_config(cfg, x, pw, bits, out, bias)
                        except Exception as e:  # a launch that does not compile fails the check, not the run
                            fails.append((bits, rule, m, str(dt)[6:], bias is not None, cfg.key(), repr(e)[:200]))
                            worst = float("inf")
                            continue
                        ref = x.double().cpu() @ w.t() + (0 if bias is None else bias.double().cpu())
                        err = ((out.double().cpu() - ref).norm() / ref.norm()).item()
                        if not torch.isfinite(out).all() or err > (2e-3 if dt == torch.float16 else 1e-2):
                            fails.append((bits, rule, m, str(dt)[6:], bias is not None, cfg.key(), err))
                            err = float("inf")
                        worst = max(worst, err)
    return worst, fails


@contextlib.contextmanager
def flipped(names):
    """The lop3 kernel's switches ``names`` (module flags of lop3_kernel: BLOCK_OFFSETS,
    LAST_SPLIT_SUMS, PDL) at the other value, inside the block."""
    was = {a: getattr(lop3_kernel, a) for a in names}
    for a, v in was.items():
        setattr(lop3_kernel, a, not v)
    try:
        yield
    finally:
        for a, v in was.items():
            setattr(lop3_kernel, a, v)


def median_of(n, calls):
    """The median of ``n`` separate CUDA graphs of ``calls`` (kernel_bench.graph_time each), µs a call."""
    return statistics.median(kb.graph_time(calls) for _ in range(n))


def time_point(n, k, bits, m, bw, fp16_cache, ab=(), ab_top=0, overlap_top=configs.LOP3_OVERLAP_TOP):
    pw0, _ = kb.make_packed(n, k, bits, "lop3", "nested", 128, seed=bits)
    fx0, _ = kb.make_packed(n, k, bits, "fixed", "nested", 128, seed=bits)
    lops = [pw0] + [kb.clone_packed(pw0) for _ in range(kb.copies_for(pw0.bytes_read(bits)) - 1)]
    fixs = [fx0] + [kb.clone_packed(fx0) for _ in range(kb.copies_for(fx0.bytes_read(bits)) - 1)]
    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    outs = [torch.empty(m, n, device="cuda", dtype=torch.float16) for _ in range(max(len(lops), len(fixs)))]
    sms = _sms(x.device)
    cands = configs.lop3_candidates(n, k // 128, m, sms, bits)

    def timed(cfgs):
        got = {}
        for cfg in cfgs:
            try:
                got[cfg.key()] = round(kb.graph_time([lambda p=p, o=o, c=cfg: run_config(c, x, p, bits, o, None)
                                                      for p, o in zip(lops, outs)]), 2)
            except Exception as e:  # as the autotuner does: a candidate that does not compile is skipped
                print(f"  {cfg.key()} skipped: {repr(e)[:120]}", flush=True)
        return got

    tried = timed(cands)
    top = sorted(cands, key=lambda c: tried.get(c.key(), float("inf")))[:overlap_top]
    tried.update(timed(configs.lop3_overlap_variants(top)))  # as the autotuner: the best few with PDL / L2 prefetch
    cands = [KernelConfig.from_key(c) for c in tried]
    best = min(tried, key=tried.get)
    need = pw0.bytes_read(bits) + 2 * m * k + 2 * m * n
    variants = {}  # --ab: the best candidates again, each with these switches flipped
    top = sorted(cands, key=lambda c: tried.get(c.key(), float("inf")))[:ab_top or len(cands)]
    for combo in ab:
        names = combo.split("+")
        if "BLOCK_OFFSETS" in names and not lop3_kernel.block_offsets(m, 4):
            continue
        with flipped(names):
            got = timed(top)
        again = timed(top)  # the same launches as they are, right after: the pair's drift shows
        vb = min(got, key=got.get)
        variants[combo] = dict(us=got[vb], config=vb, pct_copy=round(100 * need / (got[vb] * 1e-6) / bw, 1),
                               base_again_us=min(again.values()), tried=got)
    fcfg = choose_config(x, fx0, bits)
    fixed_t = median_of(3, [lambda p=p, o=o: run_config(fcfg, x, p, bits, o, None) for p, o in zip(fixs, outs)])
    if (n, k, m) not in fp16_cache:
        w16 = [torch.randn(n, k, device="cuda", dtype=torch.float16) * 0.02 for _ in range(kb.copies_for(2 * n * k))]
        fp16_cache[(n, k, m)] = median_of(3, [lambda w=w: F.linear(x, w) for w in w16])
    tdq = tdq_lop3 = None
    if m >= 32:  # the library's dequantize + cuBLAS, fixed layout (the bar) and lop3
        buf = torch.empty(n, k, device="cuda", dtype=torch.float16)

        def deq_mm(p, o):
            dequantize_triton(p, bits, torch.float16, buf)
            torch.matmul(x, buf.t(), out=o)
        tdq = kb.graph_time([lambda p=p, o=o: deq_mm(p, o) for p, o in zip(fixs[:4], outs)])
        tdq_lop3 = kb.graph_time([lambda p=p: dequantize_triton(p, bits, torch.float16, buf) for p in lops[:4]])
    # as kernel_bench.py: the winner again in two more graphs, its time the median of the three (the
    # search's minimum over many launches alone leans to the lucky ones)
    t = statistics.median([tried[best]] + [timed([KernelConfig.from_key(best)])[best] for _ in range(2)])
    row = dict(shape=f"{n}x{k}", bits=bits, batch=m, us=t, search_us=tried[best], config=best, fixed_us=round(fixed_t, 2),
               fixed_config=fcfg.key(), speedup_vs_fixed=round(fixed_t / t, 3), fp16_us=round(fp16_cache[(n, k, m)], 2),
               deq_cublas_us=None if tdq is None else round(tdq, 2),
               lop3_dequant_us=None if tdq_lop3 is None else round(tdq_lop3, 2), bytes=need,
               pct_copy=round(100 * need / (t * 1e-6) / bw, 1), tried=tried)
    if variants:
        row["flipped"] = variants
    key = configs.table_key(_device_name(x.device), n, k, m, fmt_key(pw0, bits, x.dtype))
    return row, key, KernelConfig.from_key(best)


def compile_lop3(bits, m, timeline=False, warps=4, stages=4, gps=16, k_parts=1, last=None, pdl=0, pf=0):
    """The library's lop3 kernel compiled for sm_90 without a GPU (Triton >= 3.5, with bias; its
    shared window checked at offset 0): the CompiledKernel, .asm["ptx"] / ["sass"] to read."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    from matgptq.kernels import lop3_kernel as K

    fn = K.lop3_kernel
    names = fn.arg_names
    ptr = {"X": "*i32", "Q": "*i32", "S": "*fp16", "AQ": "*i32", "OUT": "*fp16", "BIAS": "*fp16", "WS": "*fp32",
           "CNT": "*i32", "TLB": "*i64"}
    cst = dict(ZCK=float(1 << (bits - 1)) - 0.46875, TWO_D=16.0, ONE_ROW=m == 1, HAS_BIAS=True, TL=timeline,
               LAST=K.LAST_SPLIT_SUMS if last is None else last, PDL=pdl,
               PF=bool(pf),
               **K.launch_consts(bits, warps, stages, gps, m, k_parts))
    sig = {n: "constexpr" if n in cst else ptr.get(n, "i32") for n in names}
    attrs = {(names.index(n),): [["tt.divisibility", 16]]
             for n in ("X", "stride_xm", "Q", "S", "AQ", "OUT", "stride_om", "N", "SP", "WS", "CNT")}
    src = GluonASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in cst.items()}, attrs=attrs)
    comp = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps))
    K.check_window(comp)
    return comp


def sass_counts(out=None):
    """Compile the library's lop3 kernel for sm_90 without a GPU (Triton >= 3.5) and count the
    instructions of its group loop per weight (kernel_sass.py's reading), batch 1, 8 and 16, with bias."""
    from kernel_sass import loop_mix
    from matgptq.kernels.lop3_kernel import block_offsets

    rows = []
    for bits in (2, 3, 4):
        for m in (1, 8, 16):
            comp = compile_lop3(bits, m)
            hb = 2 if m > 8 else 1  # rows 8-15: a second set of mmas on the same decoded pairs
            # a loop trip: 4 groups (the ring's stages), 16 mmas each; batch 1 (OB): 8 groups, 8 each + 8
            groups, mmas = (8, 8 * 8 + 8) if block_offsets(m, 4) else (4, 16 * 4 * hb)
            regs, mix = loop_mix(comp, lambda body: sum("HMMA" in t for t in body) == mmas)
            per = sum(mix.values()) / (groups * 16 * 128 / 32)  # 64 weights a thread and group
            rows.append(dict(kernel="lop3", bits=bits, batch=m, registers=regs, per_weight=round(per, 3),
                             lop3=mix["LOP3"], groups_per_trip=groups))
            print(f"lop3 kernel {bits}-bit batch {m}: {regs} registers, {per:.2f} instructions per weight, "
                  f"{mix['LOP3']} LOP3 in the loop ({groups} groups)", flush=True)
    rows += gemm_sass_counts()
    if out:
        with open(os.path.join(out, "lop3_sass_triton36.json"), "w") as f:
            json.dump(rows, f, indent=1)


def gemm_sass_counts():
    """The lop3 layout's tl.dot kernel (lop3_gemm.py) as the dispatcher launches it on a GPU (the
    pair lop3 on, fp16): registers and the instructions of its group loop, in all and per code and
    thread."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from kernel_sass import loop_mix
    from matgptq.kernels.lop3_gemm import lop3_gemm_kernel as fn

    rows, names = [], fn.arg_names
    ptr = {"X": "*fp16", "Q": "*i32", "S": "*fp16", "OUT": "*fp16", "BIAS": "*fp16", "WS": "*fp32", "CNT": "*i32"}
    for bits in (2, 3, 4):
        for bm, bn, warps in ((16, 64, 4), (16, 128, 4), (64, 64, 4)):
            cst = dict(BM=bm, BN=bn, BITS=bits, HAS_BIAS=True, F32DOT=False, ASM=bits != 3, MAGIC=0x64006400, NS=1)
            sig = {n: "constexpr" if n in cst else ptr.get(n, "fp32" if n in ("two_d", "zv") else "i32")
                   for n in names}
            attrs = {(names.index(n),): [["tt.divisibility", 16]]
                     for n in ("X", "stride_xm", "Q", "S", "OUT", "stride_om", "N", "SP", "WS", "CNT")}
            src = ASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in cst.items()},
                            attrs=attrs)
            regs, mix = loop_mix(triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps)))
            tot = sum(mix.values())
            per = tot / (bn * 128 / (32 * warps))  # one group a loop trip: bn x 128 codes over the threads
            rows.append(dict(kernel="lop3_gemm", bits=bits, bm=bm, bn=bn, registers=regs, loop=tot,
                             per_code=round(per, 2), sts=mix["STS"]))
            print(f"lop3 tl.dot kernel {bits}-bit bm{bm} bn{bn}: {regs} registers, {tot} instructions in the loop "
                  f"({per:.2f} per code and thread, {mix['STS']} STS)", flush=True)
    return rows


def summarize_variants(rows):
    """A run of one launch under several values of a switch (columns us_VALUE, the first the
    baseline; lop3_pdl_h200.json, lop3_chains_h200.json): each value's time over the baseline's,
    median and range over all points and at batch 1 on the mid shapes."""
    cols = [c for c in rows[0] if c.startswith("us_")]
    base = cols[0]
    for c in cols[1:]:
        for label, sel in (("all points", rows), ("batch 1, mid shapes", [r for r in rows if r["batch"] == 1
                                                                           and r["shape"] != "16384x16384"])):
            q = [r[c] / r[base] for r in sel]
            print(f"{c} / {base}, {label} ({len(q)}): median {statistics.median(q):.3f}x the time "
                  f"({min(q):.3f}-{max(q):.3f}x)", flush=True)


def summarize(rows):
    big = [r for r in rows if r["shape"] in ("4096x14336", "14336x4096", "8192x8192", "16384x16384")]
    a1 = [(r["shape"], r["bits"], r["pct_copy"]) for r in big if r["batch"] == 1]
    print("A1 (batch 1, % of copy bandwidth; 80 at 4 bits, 65 at 2): "
          + ", ".join(f"{s} b{b} {p}" for s, b, p in a1), flush=True)
    miss = [(r, 65 if r["bits"] < 4 else 80) for r in big if r["batch"] == 1]
    miss = [f"{r['shape']} b{r['bits']} {r['us']:.2f} us, {r['us'] * r['pct_copy'] / t:.2f} at {t} %"
            for r, t in miss if r["pct_copy"] < t]
    print(f"A1 misses (the time the target needs, from the run's bytes and copy bandwidth): {miss}", flush=True)
    a2 = [r for r in rows if r["batch"] <= 16]
    slow = [(r["shape"], r["bits"], r["batch"], r["us"], r["fp16_us"]) for r in a2 if r["us"] > r["fp16_us"]]
    print(f"A2a (batch <= 16 not slower than fp16): {len(a2) - len(slow)}/{len(a2)}; misses {slow}", flush=True)
    a2b = [r for r in rows if r["batch"] >= 32 and r["deq_cublas_us"]]
    far = [(r["shape"], r["bits"], r["batch"], r["us"], r["deq_cublas_us"]) for r in a2b
           if r["us"] > 1.1 * r["deq_cublas_us"]]
    print(f"A2b (batch >= 32 within 10 % of dequantize + cuBLAS): {len(a2b) - len(far)}/{len(a2b)}; misses {far}",
          flush=True)
    fx = [r["speedup_vs_fixed"] for r in rows if r["batch"] <= 16]
    if fx:
        print(f"against the fixed layout, batch <= 16: median {statistics.median(fx):.3f}x "
              f"({min(fx):.3f}-{max(fx):.3f}x, {len(fx)} points)", flush=True)
    for r in rows:  # where the tuner tried other ring depths: their best launch against the best 4-stage one
        best = {}
        for c, v in r["tried"].items():
            if c.startswith("lop3") and c.rsplit(":", 1)[1].startswith("s"):
                st = int(c.rsplit(":s", 1)[1])
                best[st] = min(best.get(st, v), v)
        if len(best) > 1 and 4 in best:
            print(f"{r['shape']} b{r['bits']} m{r['batch']} ring stages, best 4-stage time over best of each: "
                  + ", ".join(f"s{st} {best[4] / v:.3f}x" for st, v in sorted(best.items()) if st != 4), flush=True)
    forms = {(1, 0): "p1", (2, 0): "p2", (0, 1): "pf", (1, 1): "p1+pf", (2, 1): "p2+pf"}
    pdl = []  # the tuner's overlap round: each form's best launch over the best launch with neither
    for r in rows:
        by = {}
        for c, v in r["tried"].items():
            if c.startswith("lop3"):
                cfg = KernelConfig.from_key(c)
                by.setdefault((cfg.pdl, cfg.l2_prefetch), []).append(v)
        if (0, 0) in by and len(by) > 1:
            pdl.append(f"{r['shape']} b{r['bits']} m{r['batch']} " + " ".join(
                f"{name} {min(by[f]) / min(by[(0, 0)]):.3f}x" for f, name in forms.items() if f in by))
    if pdl:
        print("PDL (p1, p2) and the L2 prefetch (pf), best launch with each over best with neither: " + ", ".join(pdl),
              flush=True)
    pairs, same = [], []  # lop3_h100g.json (commit f1df942's cluster launches, key part c1): the best cluster launch's time
    # over the best global split-K launch
    for r in rows:
        cl = [v for c, v in r["tried"].items() if c.startswith("lop3") and c.endswith(":c1")]
        gl_ = [v for c, v in r["tried"].items() if c.startswith("lop3") and not c.endswith(":c1")]
        if cl and gl_:
            pairs.append((r["shape"], r["bits"], r["batch"], min(cl) / min(gl_)))
            same += [v / r["tried"][c[:-3]] for c, v in r["tried"].items() if c.endswith(":c1") and c[:-3] in r["tried"]]
    if pairs:
        q = [p[3] for p in pairs]
        print(f"cluster launches (split-K through distributed shared memory): the best one takes "
              f"{statistics.median(q):.3f}x the time of the best global-split launch in the median ({min(q):.3f}-{max(q):.3f}x, {len(q)} points); "
              + ", ".join(f"{s} b{b} m{m} {v:.3f}x" for s, b, m, v in pairs)
              + f"; the same launch with a cluster over without: {min(same):.3f}-{max(same):.3f}x ({len(same)} pairs)",
              flush=True)
    combos = sorted({c for r in rows for c in r.get("flipped", {})})
    for c in combos:  # --ab: each point's best flipped launch over its best launch as is (timed right after)
        q = [(r, r["flipped"][c]) for r in rows if c in r.get("flipped", {})]
        print(f"{c} flipped, best over best as is (timed again after it): "
              + ", ".join(f"{r['shape']} b{r['bits']} m{r['batch']} {v['us']:.2f} ({v['pct_copy']} %)/{v['base_again_us']:.2f} "
                          f"({v['us'] / v['base_again_us']:.3f}x)" for r, v in q), flush=True)
        each = sorted((v["tried"][k] / r["tried"][k], f"{r['shape']} b{r['bits']} m{r['batch']} {k}")
                      for r, v in q for k in v["tried"] if k in r["tried"])
        drift = [v["base_again_us"] / r.get("search_us", r["us"]) for r, v in q]
        print(f"{c}: the best launch as is, timed again, over the tuner's round: {min(drift):.3f}-{max(drift):.3f}x "
              "(the run's drift)", flush=True)
        if each:  # launch by launch: flipped over its timing in the tuner's round
            print(f"{c} flipped, the same launch over its first timing: {each[0][0]:.3f}-{each[-1][0]:.3f}x "
                  f"({len(each)} launches); slowest " + ", ".join(f"{w} {x:.3f}x" for x, w in each[::-1][:4]),
                  flush=True)
    mid = ("4096x14336", "14336x4096", "8192x8192")
    for m, part in ((m, part) for m in sorted({r["batch"] for r in rows}) for part in ("mid", "other")):
        at = [r for r in rows if r["batch"] == m and (r["shape"] in mid) == (part == "mid")]
        if not at:
            continue
        fp = [r["fp16_us"] / r["us"] for r in at]
        vf = [r["speedup_vs_fixed"] for r in at]
        where = "the mid shapes" if part == "mid" else ", ".join(sorted({r["shape"] for r in at}))
        line = (f"batch {m}, {where}: {min(r['us'] for r in at):.1f}-{max(r['us'] for r in at):.1f} us, "
                f"{min(fp):.2f}-{max(fp):.2f}x the speed of fp16, {min(vf):.2f}-{max(vf):.2f}x of the fixed layout")
        dq = [r["us"] / r["deq_cublas_us"] for r in at if r.get("deq_cublas_us")]
        if dq:
            line += f", {min(dq):.2f}-{max(dq):.2f}x the time of dequantize + cuBLAS"
        gm = [min(v for c, v in r["tried"].items() if c.startswith("gemm")) for r in at
              if any(c.startswith("gemm") for c in r["tried"])]
        if gm:
            line += f"; the best tl.dot launch {min(gm):.1f}-{max(gm):.1f} us"
        ld = [r["lop3_dequant_us"] for r in at if r.get("lop3_dequant_us")]
        if ld:
            line += f"; the lop3 dequantize alone {min(ld):.1f}-{max(ld):.1f} us"
        print(line, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="4096x14336,14336x4096,8192x8192,16384x16384,4096x4096")
    ap.add_argument("--bits", default="2,3,4", help="widths checked and timed")
    ap.add_argument("--batches", default="1,2,4,8,16,32,64")
    ap.add_argument("--checks-only", action="store_true")
    ap.add_argument("--no-check", action="store_true", help="time only (the checks of an earlier run stand)")
    ap.add_argument("--sass", action="store_true", help="offline: the kernels' SASS counts (no GPU)")
    ap.add_argument("--summarize", metavar="JSON", help="no GPU: print the summary of a saved run (lop3_TAG.json)")
    ap.add_argument("--variants", metavar="JSON", help="no GPU: the ratios of a saved variant run (us_VALUE columns)")
    ap.add_argument("--ab", nargs="*", default=None, metavar="SWITCH[+SWITCH]",
                    help="also the launches with these lop3_kernel switches flipped (each argument one variant; "
                    "switches BLOCK_OFFSETS: batch 1's offset mma per block, LAST_SPLIT_SUMS: the split-K sum by "
                    "the last split, PDL: the configs' programmatic dependent launch, as MATGPTQ_LOP3_PDL=0 turns it off), "
                    "then the same launches as they are again; "
                    "--ab alone: BLOCK_OFFSETS")
    ap.add_argument("--ab-top", type=int, default=0, help="--ab: only the N best launches of a point (0: all)")
    ap.add_argument("--overlap-top", type=int, default=configs.LOP3_OVERLAP_TOP,
                    help="time this many best launches of a point again with PDL 1 and 2 and the L2 prefetch, alone "
                    "and together (the autotuner: %(default)s)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--tag", default="h200")
    args = ap.parse_args()
    args.ab = ["BLOCK_OFFSETS"] if args.ab == [] else args.ab or []
    if args.overlap_top < 0 or args.ab_top < 0:
        raise SystemExit(f"--overlap-top {args.overlap_top} --ab-top {args.ab_top}: each takes a count of launches, "
                         "0 or more (--ab-top 0: all of them)")
    bad = sorted({n for c in args.ab for n in c.split("+")} - {"BLOCK_OFFSETS", "LAST_SPLIT_SUMS", "PDL"})
    if bad:
        raise SystemExit(f"--ab {' '.join(args.ab)}: unknown switch {', '.join(bad)}; the lop3 kernel's switches are "
                         "BLOCK_OFFSETS, LAST_SPLIT_SUMS and PDL, joined by + for a variant with several flipped")
    if args.sass:
        return sass_counts(args.out)
    if args.variants:
        with open(args.variants) as f:
            return summarize_variants(json.load(f)["rows"])
    if args.summarize:
        with open(args.summarize) as f:
            return summarize(json.load(f)["rows"])
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/lop3.py needs a GPU (the lop3 kernel is CUDA only; the CPU tests are "
                         "tests/test_lop3.py)")
    worst, fails = (None, []) if args.no_check else check(tuple(int(b) for b in args.bits.split(",")))
    if worst is not None:
        print(f"checks: worst relative error {worst:.2e}; failures {fails}", flush=True)
    if args.checks_only:
        return
    bw, _ = kb.copy_bandwidth()
    rows, tuned, fp16_cache = [], {}, {}
    for shape in args.shapes.split(","):
        n, k = (int(v) for v in shape.split("x"))
        for bits in (int(b) for b in args.bits.split(",")):
            for m in (int(b) for b in args.batches.split(",")):
                row, key, cfg = time_point(n, k, bits, m, bw, fp16_cache, args.ab, args.ab_top, args.overlap_top)
                rows.append(row)
                tuned[key] = cfg.__dict__.copy()
                print(f"{shape:>11} b{bits} m{m:<3} lop3 {row['us']:8.2f} µs ({row['pct_copy']:5.1f} %) "
                      f"{row['config']:28s} fixed {row['fixed_us']:8.2f} ({row['speedup_vs_fixed']:.2f}x)  "
                      f"fp16 {row['fp16_us']:8.2f}  "
                      f"deq+cuBLAS {row['deq_cublas_us']}  lop3 dequant {row['lop3_dequant_us']}"
                      + "".join(f"  [{c} flipped {v['us']:.2f} ({v['pct_copy']:.1f} %) {v['config']}, as is "
                                f"again {v['base_again_us']:.2f}]" for c, v in row.get("flipped", {}).items()),
                      flush=True)
                if args.out:  # after every point: a run cut off keeps what it measured
                    save(args.out, args.tag, dict(copy_bw_GBps=round(bw / 1e9, 1), check_worst_rel_err=worst,
                                                  check_failures=fails, rows=rows), tuned)
    summarize(rows)


def save(out, tag, result, tuned):
    os.makedirs(out, exist_ok=True)
    for name, obj in ((f"lop3_{tag}.json", result), (f"tuned_lop3_{tag}.json", tuned)):
        tmp = os.path.join(out, name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)
        os.replace(tmp, os.path.join(out, name))


if __name__ == "__main__":
    main()
