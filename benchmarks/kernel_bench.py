"""Quantized matmul kernels on the GPU: correctness, tuning and timings in one run.

(Named ``kernel_bench``, not ``kernels``: run from ``benchmarks/``, a ``kernels.py`` there shadows
Hugging Face's ``kernels`` package, which transformers imports.)

Shape convention: N×K = out_features × in_features, so "4096×14336" is out = 4096, in = 14336
(the MLP down projection of an 8B model).

    python benchmarks/kernel_bench.py --out DIR          # checks + tuning + full table (one GPU call)
    python benchmarks/kernel_bench.py --no-tune          # use the committed tuned table / heuristic

1. Measures the device copy bandwidth (device-to-device copy, bytes read + written).
2. Checks every kernel path against a float64 reference on NaN-poisoned outputs (all widths,
   both rules and layouts, batch sizes 1..33 with odd shapes, fp16/bf16, groups, zeros, bias).
3. Times, with CUDA graphs (median of replays; the chosen config and the baselines are timed in
   three separate graphs and the median kept), each (shape, bits, layout, batch) against
   torch.nn.functional.linear with fp16 weights and against dequantize + cuBLAS. Every replay
   cycles through enough weight copies that the weights do not sit in L2. At batch 1 it also
   times a plain streaming read of the same bytes (``read_us``): the fastest a kernel that must
   read them can be.
4. Prints the table and the acceptance checks, writes JSON (and the tuned table) under --out.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

SHAPES = [(4096, 14336), (14336, 4096), (8192, 8192), (16384, 16384), (4096, 4096)]  # acceptance shapes first
BATCHES = [1, 2, 4, 8, 16, 32, 64]
BITS = [2, 3, 4, 6, 8]
ROTATE_BYTES = 160e6  # weight bytes touched per graph replay: > 3x the 50 MB L2 of an H100
DEV = "cuda"  # --device cpu: a dry run under TRITON_INTERPRET=1 (tiny shapes), no timings worth reading


# ---------------------------------------------------------------------------------------------
# helpers shared by the workers and the main process

def make_packed(n, k, bits, layout, rule="nested", gs=128, asym=False, seed=0, device=None, m=8):
    from matgptq.kernels.pack import pack
    from matgptq.quant.grid import dequantize

    device = device or DEV
    g = torch.Generator(device=device).manual_seed(seed)
    groups = 1 if gs is None else k // gs
    q = torch.randint(0, 1 << m, (n, k), generator=g, dtype=torch.uint8, device=device)
    s = (torch.rand(n, groups, generator=g, device=device) * 0.02 + 1e-3).half()
    z = (torch.randint(0, 1 << m, (n, groups), generator=g, device=device) if asym
         else torch.full((n, groups), 1 << (m - 1), device=device)).to(torch.uint8)
    pw = pack(q, s, z, master_bits=m, slicing=rule, group_size=gs, layout=layout, bits=bits)
    return pw, (q, s, z)


def reference(qsz, bits, rule, gs, m=8):
    from matgptq.quant.grid import dequantize

    q, s, z = qsz
    return dequantize(q, s, z, m, bits, rule, gs, torch.float64)


def check_case(case):
    """One correctness case: every listed kernel config on a NaN-poisoned output."""
    from matgptq.kernels.configs import KernelConfig
    from matgptq.kernels.dispatch import quant_matmul, run_config

    n, k, bits, layout, rule, gs, asym, dtype_name, batch, cfgs, bias_on = case
    dtype = getattr(torch, dtype_name)
    pw, qsz = make_packed(n, k, bits, layout, rule, gs, asym, seed=n + k + bits + batch)
    w = reference(qsz, bits, rule, gs)
    g = torch.Generator(device="cpu").manual_seed(batch)
    x = torch.randn(batch, k, generator=g).to(dtype).to(DEV)
    bias = torch.randn(n, generator=g).to(dtype).to(DEV) if bias_on else None
    ref = x.double() @ w.t()
    if bias is not None:
        ref += bias.double()
    res = []
    for c in cfgs + [None]:
        out = torch.full((batch, n), float("nan"), dtype=dtype, device=DEV)
        if c is None:
            out = quant_matmul(x, pw, bits, bias)  # the automatic choice
            name = "auto"
        else:
            cfg = KernelConfig(**c)
            run_config(cfg, x, pw, bits, out, bias)
            name = cfg.key()
        sync()
        finite = bool(torch.isfinite(out).all())
        err = float((out.double() - ref).norm() / ref.norm())
        tol = 1e-3 if dtype == torch.float16 else 8e-3
        res.append(dict(n=n, k=k, bits=bits, layout=layout, rule=rule, gs=gs, asym=asym, dtype=dtype_name,
                        batch=batch, bias=bias_on, config=name, rel_err=err, all_written=finite,
                        ok=finite and err < tol))
    return res


def check_cases():
    cases = []
    gemv = lambda bn=64, sk=2, w=4, st=1: dict(kind="gemv", bn=bn, split_k=sk, num_warps=w, num_stages=st)  # noqa: E731
    gemm = lambda bm=16, bn=64, sk=2: dict(kind="gemm", bm=bm, bn=bn, split_k=sk)  # noqa: E731
    mma = lambda bn=64, sk=2, w=4, st=1, ku=1, r=0, uo=0: dict(kind="mma", bm=8, bn=bn, split_k=sk,  # noqa: E731
                                                               num_warps=w, num_stages=st, k_unroll=ku, max_regs=r,
                                                               units_outer=uo)
    # every width, both rules, both layouts: batch 1 and 9 on an odd shape (K not a k-tile multiple)
    for layout in ("fixed", "resident"):
        for rule in ("round", "nested"):
            for bits in range(2, 9):
                cases.append((1000, 1000, bits, layout, rule, None, False, "float16", 1,
                              [gemv(), gemv(st=3), mma(), mma(16, 3, 1, 2), mma(64, 3, 8, 1, 2), mma(16, 1, 4, 2, 4),
                               mma(16, 2, 1, 3), mma(64, 2, 2, uo=1)], False))
                cases.append((1000, 1000, bits, layout, rule, None, False, "float16", 9, [gemm()], False))
    # every batch size, group 128, both kernels where they apply, bias, bf16 / asym variants
    for batch in (1, 2, 3, 5, 7, 8, 9, 16, 33, 64, 300):
        cfgs = ([gemv(), gemv(128, 1, 4), gemv(64, 3, 4, 3)] if batch <= 8 else []) + (
            [gemm(16 if batch <= 16 else 32 if batch <= 32 else 64)] if batch > 1 else [])
        if batch >= 32:
            cfgs.append(dict(kind="cublas"))
        mcfgs = [mma(), mma(64, 3, 4, 2), mma(32, 3, 1), mma(64, 3, 8, 2, 2), mma(64, 2, 16, 1, 4),
                 mma(64, 2, 2, r=128), mma(64, 1, 8, 1, 2, 128), mma(16, 3, 1, 3), mma(64, 2, 8, 3, 2),
                 mma(16, 3, 1, 2, uo=1), mma(64, 2, 8, 3, 2, uo=1),
                 mma(64, 3, 2, uo=1)] if batch <= 16 else []
        cases.append((4096, 2048, 4, "fixed", "nested", 128, False, "float16", batch, cfgs + mcfgs, True))
        cases.append((1536, 1024, 3, "resident", "round", 64, True, "bfloat16", batch, cfgs, False))
    cases.append((520, 2560, 6, "resident", "nested", 32, True, "float16", 5,
                  [gemv(32, 5), gemm(16, 32, 5), mma(64, 5), mma(16, 2, 1)], True))
    cases.append((1000, 1016, 8, "fixed", "round", None, True, "float16", 7, [mma(32, 2, 1)], True))
    return cases


# ---------------------------------------------------------------------------------------------
# precompilation in parallel (every distinct kernel is compiled once, by some worker)

def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def _worker(jobs, dev="cuda"):
    global DEV
    DEV = dev
    if DEV == "cuda":
        torch.cuda.init()
    out = []
    for job in jobs:
        try:
            if job[0] == "check":
                out.extend(check_case(job[1]))
            else:
                warm_config(*job[1:])
        except Exception as e:  # reported, not fatal
            out.append(dict(error=(repr(e)[:150] + " ... " + repr(e)[-600:]), job=str(job)[:300]))
    return out


def variants(c, spec: str) -> list:
    """Copies of an mma config with other launch options, for experiments before a change of the
    tuner's candidates: ``spec`` lists them as key parts, "+" joining several ("s3,r128,s3+u1":
    num_stages=3; max_regs=128; both num_stages=3 and units_outer=1)."""
    from dataclasses import replace

    if c.kind != "mma" or not spec:
        return []
    names = {"s": "num_stages", "r": "max_regs", "u": "units_outer"}
    out = []
    for v in spec.split(","):
        opts = {}
        for part in v.split("+"):
            if part[:1] not in names or not part[1:].isdigit():
                raise SystemExit(f"--variants {spec}: bad part {part!r}; write s<N> (num_stages), r<N> (max_regs) "
                                 "or u<N> (units_outer), joined by +")
            opts[names[part[0]]] = int(part[1:])
        out.append(replace(c, **opts))
    return [o for o in out if o != c]


def warm_config(bits, layout, rule, batch, cfgd, dtype_name):
    """Compile the kernel a benchmark point will use, on a small problem with the same
    specialisation (N, K multiples of 512, same batch)."""
    from matgptq.kernels.configs import KernelConfig
    from matgptq.kernels.dispatch import run_config

    pw, _ = make_packed(256, 1024, bits, layout, rule, 128)
    x = torch.randn(batch, pw.k, device=DEV).to(getattr(torch, dtype_name))
    out = torch.empty(batch, pw.n, device=DEV, dtype=x.dtype)
    cfg = KernelConfig(**{**cfgd, "split_k": 2})
    run_config(cfg, x, pw, bits, out, None)
    sync()


def parallel(jobs, workers):
    if not jobs:
        return []
    if workers <= 1:
        return _worker(jobs, DEV)
    chunks = [(jobs[i::workers], DEV) for i in range(workers)]
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers) as pool:
        parts = pool.starmap(_worker, chunks)
    return [r for p in parts for r in p]


# ---------------------------------------------------------------------------------------------
# timing

def graph_time(calls, reps=15):
    """Median µs per call: all calls captured in one CUDA graph, timed over replays."""
    if DEV != "cuda":
        t = time.perf_counter()
        for c in calls:
            c()
        return (time.perf_counter() - t) * 1e6 / len(calls)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for c in calls:
            c()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for c in calls:
            c()
    g.replay()
    g.replay()
    torch.cuda.synchronize()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for _ in range(reps):
        e0.record()
        g.replay()
        e1.record()
        e1.synchronize()
        ts.append(e0.elapsed_time(e1) * 1e3 / len(calls))
    del g
    return statistics.median(ts)


def copy_bandwidth():
    a = torch.empty(1 << (30 if DEV == "cuda" else 20), dtype=torch.uint8, device=DEV)
    b = torch.empty_like(a)
    a.random_(0, 255)
    t = graph_time([lambda: b.copy_(a)], reps=20)
    return 2 * a.numel() / (t * 1e-6), t


def read_time(nbytes):
    """µs of the fastest plain streaming read of nbytes (rotating copies, like the kernels): the
    speed of light for a kernel that must read those bytes once, launch and ramp-up included."""
    import triton

    if DEV != "cuda":
        return None
    n = nbytes // 4
    bufs = [torch.randint(0, 1 << 30, (n,), device=DEV, dtype=torch.int32) for _ in range(copies_for(nbytes))]
    best = float("inf")
    for block, iters, warps in ((512, 16, 4), (1024, 8, 4), (2048, 4, 8)):
        grid = triton.cdiv(n, block * iters)
        out = torch.empty(grid * block, device=DEV, dtype=torch.int32)
        t = graph_time([lambda b=b: _read_kernel()[(grid,)](b, out, n, BLOCK=block, ITERS=iters, num_warps=warps)
                        for b in bufs])
        best = min(best, t)
    return best


@functools.lru_cache(maxsize=1)
def _read_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def read_kernel(X, OUT, n, BLOCK: tl.constexpr, ITERS: tl.constexpr):
        pid = tl.program_id(0)
        acc = tl.zeros([BLOCK], dtype=tl.int32)
        for j in tl.static_range(ITERS):  # every load issued before the first is used
            offs = (pid * ITERS + j) * BLOCK + tl.arange(0, BLOCK)
            acc ^= tl.load(X + offs, mask=offs < n, other=0, eviction_policy="evict_first")
        tl.store(OUT + pid * BLOCK + tl.arange(0, BLOCK), acc)

    return read_kernel


def copies_for(nbytes):
    return max(1, min(48, math.ceil(ROTATE_BYTES / max(1, nbytes))))


def clone_packed(pw):
    return pw.with_buffers(pw.qweight.clone(), pw.scales.clone(), None if pw.zeros is None else pw.zeros.clone())


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=",".join(f"{n}x{k}" for n, k in SHAPES))
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    ap.add_argument("--bits", default=",".join(map(str, BITS)))
    ap.add_argument("--layouts", default="fixed,resident")
    ap.add_argument("--rule", default="nested", help="slicing rule of the timed weights")
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--no-tune", action="store_true", help="use the committed table / heuristic")
    ap.add_argument("--kinds", default=None, help="tune over these kernels only (e.g. mma,gemm; default: all)")
    ap.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    ap.add_argument("--time-limit", type=float, default=360, help="seconds; later points are skipped")
    ap.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results"))
    ap.add_argument("--tag", default="h100")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--max-checks", type=int, default=10 ** 6)
    ap.add_argument("--variants", default="", help="also time every mma candidate with each of these "
                    "options (key parts: s3 = num_stages 3, r128 = max_regs 128, u1 = units_outer; + joins several)")
    ap.add_argument("--check-batches", default=None, help="only the correctness cases of these batch sizes (1,9,16)")
    ap.add_argument("--summarize", nargs="+", metavar="JSON",
                    help="no GPU work: merge the rows of earlier runs (split by shape) into --out/kernels_TAG.json "
                         "and tuned_TAG.json, and print the table and the acceptance checks")
    ap.add_argument("--replace", action="store_true",
                    help="with --summarize: a point measured again in a later run replaces the earlier one")
    ap.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"),
                    help="no GPU work: speedups of NEW over OLD (two kernels_TAG.json) per batch, per width at batch 1 "
                         "and per layout, and in NEW the paired timings of one launch with and without an option "
                         "(num_stages 2 / 3, register cap, units outer, and the dropped two accumulator chains, "
                         "L1 prefetch and activations ahead)")
    args = ap.parse_args()
    if args.compare:
        return compare(*args.compare)
    if args.summarize:
        return merge_runs(args.summarize, args.out, args.tag, args.replace)
    global DEV
    DEV = args.device
    t_start = time.time()
    os.makedirs(args.out, exist_ok=True)

    from matgptq.kernels import configs
    from matgptq.kernels.configs import KernelConfig
    from matgptq.kernels.dispatch import (_device_name, _sms, choose_config, dequantize_triton, fmt_key,
                                          run_config, use_prmt)

    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    bitsl = [int(b) for b in args.bits.split(",")]
    layouts = args.layouts.split(",")
    kinds = None if args.kinds is None else set(args.kinds.split(","))
    if kinds is not None and not kinds <= set(configs.KINDS):
        raise SystemExit(f"--kinds {args.kinds}: unknown kernel {sorted(kinds - set(configs.KINDS))}; "
                         f"choose from {', '.join(configs.KINDS)}")
    dev = torch.device(DEV)
    name = _device_name(dev)
    sms = _sms(dev)
    import triton

    env = dict(device=name, sms=sms, torch=torch.__version__, triton=triton.__version__,
               cuda=torch.version.cuda, prmt=use_prmt(4), shape_convention="N x K = out_features x in_features")
    print(json.dumps(env), flush=True)

    # the configurations every point will try
    def point_candidates(n, k, m, bits):
        kt = -(-k // 512)
        if args.no_tune:
            return None
        cands = configs.candidates(n, kt, m, sms, mma=True, bits=bits)  # fp16 activations
        cands = [c for c in cands if kinds is None or c.kind in kinds]
        return cands + [v for c in cands for v in variants(c, args.variants)]

    plan = []
    for (n, k) in shapes:
        for bits in bitsl:
            for layout in layouts:
                for m in batches:
                    plan.append((n, k, bits, layout, m))

    # precompile everything in parallel, running the correctness checks on the way
    cases = check_cases()
    if args.check_batches:
        keep = {int(b) for b in args.check_batches.split(",")}
        have = sorted({c[8] for c in cases})
        if not keep <= set(have):
            raise SystemExit(f"--check-batches {args.check_batches}: no correctness cases for batch "
                             f"{sorted(keep - set(have))}; choose from {have}")
        cases = [c for c in cases if c[8] in keep]
    jobs = [] if args.no_check else [("check", c) for c in cases[: args.max_checks]]
    seen = set()
    for (n, k, bits, layout, m) in plan:
        kt = -(-k // 512)
        cands = point_candidates(n, k, m, bits) or [configs.lookup(name, n, k, m, "") or configs.heuristic(n, kt, m, sms, mma=True)]
        for c in cands:
            if c.kind == "cublas":
                key = ("deq", bits, layout)
                cd = dict(kind="cublas")
            else:
                cd = dict(kind=c.kind, bm=c.bm, bn=c.bn, num_warps=c.num_warps, num_stages=c.num_stages,
                          k_unroll=c.k_unroll, max_regs=c.max_regs, units_outer=c.units_outer)
                key = (bits, layout, m if c.kind == "gemv" else c.bm, c.kind, c.bn, c.num_warps, c.num_stages,
                       c.k_unroll, c.max_regs, c.units_outer)
            if key in seen:
                continue
            seen.add(key)
            jobs.append(("warm", bits, layout, args.rule, m, cd, "float16"))
    t0 = time.time()
    results = parallel(jobs, args.workers)
    checks = [r for r in results if "ok" in r]
    errors = [r for r in results if "error" in r]
    print(f"precompiled {len(jobs)} jobs in {time.time() - t0:.1f} s with {args.workers} workers; "
          f"{len(errors)} errors", flush=True)
    for e in errors[:10]:
        print("  ERROR", e, flush=True)
    bad = [c for c in checks if not c["ok"]]
    print(f"correctness: {len(checks)} kernel runs, {len(bad)} failed", flush=True)
    for c in bad[:20]:
        print("  FAIL", c, flush=True)

    bw, t_copy = copy_bandwidth()
    print(f"copy bandwidth: {bw / 1e9:.0f} GB/s (1 GiB copy, read + write, {t_copy:.0f} µs)", flush=True)

    rows = []
    rows_extra = {}
    tuned = {}
    out_json = os.path.join(args.out, f"kernels_{args.tag}.json")

    def dump():
        with open(out_json, "w") as f:
            json.dump(dict(env=env, copy_bw_GBps=bw / 1e9, checks=checks, check_errors=errors, rows=rows,
                           tuned=tuned, seconds=time.time() - t_start, **rows_extra), f, indent=1)

    fp16_cache = {}
    deq_cache = {}
    read_cache = {}
    skipped = 0
    for (n, k) in shapes:
        w16 = None
        for bits in bitsl:
            for layout in layouts:
                pw0, _ = make_packed(n, k, bits, layout, args.rule, 128, seed=bits)
                nbytes = pw0.bytes_read(bits)
                copies = [pw0] + [clone_packed(pw0) for _ in range(copies_for(nbytes) - 1)]
                for m in batches:
                    if time.time() - t_start > args.time_limit:
                        skipped += 1
                        continue
                    x = torch.randn(m, k, device=dev, dtype=torch.float16)
                    outs = [torch.empty(m, n, device=dev, dtype=torch.float16) for _ in copies]
                    kt = pw0.k_tiles
                    cands = point_candidates(n, k, m, bits)
                    if cands is None:
                        cands = [choose_config(x, pw0, bits)]
                    best, best_t, tried = None, float("inf"), {}
                    for c in cands:
                        try:
                            t = graph_time([lambda p=p, o=o, c=c: run_config(c, x, p, bits, o, None)
                                            for p, o in zip(copies, outs)])
                        except Exception as e:  # noqa: BLE001
                            tried[c.key()] = repr(e)[:120]
                            continue
                        tried[c.key()] = round(t, 2)
                        if t < best_t:
                            best, best_t = c, t
                    if best is None:
                        continue
                    # the winner again, twice: a point's time is the median of three separate graphs
                    best_t = statistics.median([best_t] + [graph_time(
                        [lambda p=p, o=o: run_config(best, x, p, bits, o, None) for p, o in zip(copies, outs)])
                        for _ in range(2)])
                    tuned[configs.table_key(name, n, k, m, fmt_key(pw0, bits, x.dtype))] = {
                        kk: v for kk, v in best.__dict__.items()}
                    # baselines (once per shape and batch / shape, bits and batch)
                    if (n, k, m) not in fp16_cache:
                        if w16 is None:
                            w16 = [torch.randn(n, k, device=dev, dtype=torch.float16) * 0.02
                                   for _ in range(copies_for(2 * n * k))]
                        fp16_cache[(n, k, m)] = statistics.median(
                            graph_time([lambda w=w: F.linear(x, w) for w in w16]) for _ in range(3))
                    t16 = fp16_cache[(n, k, m)]
                    tdq = None
                    if m >= 32 and layout == layouts[0]:
                        buf = torch.empty(n, k, device=dev, dtype=torch.float16)
                        od = torch.empty(m, n, device=dev, dtype=torch.float16)

                        def deq_mm(p):
                            dequantize_triton(p, bits, torch.float16, buf)
                            torch.matmul(x, buf.t(), out=od)
                        tdq = graph_time([lambda p=p: deq_mm(p) for p in copies[:4]])
                        deq_cache[(n, k, bits, m)] = tdq
                    tdq = deq_cache.get((n, k, bits, m))
                    need = nbytes + 2 * m * k + 2 * m * n
                    gbs = need / (best_t * 1e-6) / 1e9
                    if m == 1 and need not in read_cache:
                        read_cache[need] = read_time(need)
                    t_read = read_cache.get(need) if m == 1 else None
                    row = dict(shape=f"{n}x{k}", out=n, inp=k, bits=bits, layout=layout, rule=args.rule, batch=m,
                               us=round(best_t, 2), bytes=need, GBps=round(gbs, 1),
                               pct_copy=round(100 * gbs * 1e9 / bw, 1), fp16_us=round(t16, 2),
                               speedup_vs_fp16=round(t16 / best_t, 2),
                               deq_cublas_us=None if tdq is None else round(tdq, 2),
                               config=best.key(), tried=tried, copies=len(copies),
                               read_us=None if t_read is None else round(t_read, 2))
                    rows.append(row)
                    print(f"{n:>5}x{k:<5} b{bits} {layout:8s} m{m:<3} {best_t:8.2f} µs {gbs:7.0f} GB/s "
                          f"{row['pct_copy']:5.1f}%  fp16 {t16:8.2f} µs  x{row['speedup_vs_fp16']:5.2f}"
                          + (f"  deq+cuBLAS {tdq:8.2f} µs" if tdq else "")
                          + (f"  plain read {t_read:6.2f} µs" if t_read else "") + f"  [{best.key()}]", flush=True)
                del copies, pw0
                if DEV == "cuda":
                    torch.cuda.empty_cache()
            dump()
        del w16
        if DEV == "cuda":
            torch.cuda.empty_cache()
    # ablation: the byte-permute decode against the shift-and-mask decode, batch 1
    ablation = []
    for (n, k) in shapes[:1]:
        for bits in [b for b in bitsl if b <= 7][:3]:
            if time.time() - t_start > args.time_limit + 30:
                break
            pw0, _ = make_packed(n, k, bits, "fixed", args.rule, 128, seed=bits)
            copies = [pw0] + [clone_packed(pw0) for _ in range(copies_for(pw0.bytes_read(bits)) - 1)]
            x = torch.randn(1, k, device=dev, dtype=torch.float16)
            outs = [torch.empty(1, n, device=dev, dtype=torch.float16) for _ in copies]
            r = next((r for r in rows if r["shape"] == f"{n}x{k}" and r["bits"] == bits and r["layout"] == "fixed"
                      and r["batch"] == 1), None)
            if r is None:
                continue
            cfg = KernelConfig.from_key(r["config"])
            os.environ["MATGPTQ_NO_PRMT"] = "1"
            try:
                t = graph_time([lambda p=p, o=o: run_config(cfg, x, p, bits, o, None) for p, o in zip(copies, outs)])
            finally:
                os.environ.pop("MATGPTQ_NO_PRMT")
            ablation.append(dict(shape=f"{n}x{k}", bits=bits, config=cfg.key(), prmt_us=r["us"], shift_mask_us=round(t, 2)))
            print(f"ablation {n}x{k} b{bits}: byte-permute {r['us']:.2f} µs, shift-and-mask {t:.2f} µs", flush=True)
    rows_extra["ablation"] = ablation
    dump()
    with open(os.path.join(args.out, f"tuned_{args.tag}.json"), "w") as f:
        json.dump(tuned, f, indent=0)
    summarize(rows, checks, skipped)
    print(f"total {time.time() - t_start:.0f} s; JSON: {out_json}")


def merge_runs(paths, out, tag, replace=False):
    runs = [json.load(open(p)) for p in paths]
    merged = dict(runs[0])
    point = lambda r: (r["shape"], r["bits"], r["layout"], r["batch"])  # noqa: E731
    if replace:  # the last run that measured a point wins
        last = {point(r): i for i, run in enumerate(runs) for r in run["rows"]}
        merged["rows"] = [r for i, run in enumerate(runs) for r in run["rows"] if last[point(r)] == i]
        print(f"--replace: {sum(len(run['rows']) for run in runs) - len(merged['rows'])} points measured again "
              "in a later run were replaced")
    else:
        merged["rows"] = [r for run in runs for r in run["rows"]]
    points = [point(r) for r in merged["rows"]]
    twice = sorted({p for p in points if points.count(p) > 1})
    if twice:
        raise SystemExit(f"--summarize: {len(twice)} points are in more than one run (first: {twice[0]}); "
                         "merge runs that split the shapes, not runs that repeat them (or pass --replace)")
    merged["checks"] = [c for run in runs for c in run["checks"]]
    merged["tuned"] = {k: v for run in runs for k, v in run["tuned"].items()}
    # every row keeps its percentage of the copy bandwidth measured in its own run
    merged["copy_bw_GBps"] = [run["copy_bw_GBps"] for run in runs]
    merged["ablation"] = [a for run in runs for a in run.get("ablation", [])]
    merged["merged_from"] = [dict(file=os.path.basename(p), copy_bw_GBps=run["copy_bw_GBps"],
                                  seconds=run.get("seconds")) for p, run in zip(paths, runs)]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"kernels_{tag}.json"), "w") as f:
        json.dump(merged, f, indent=1)
    with open(os.path.join(out, f"tuned_{tag}.json"), "w") as f:
        json.dump(merged["tuned"], f, indent=0)
    print("copy bandwidth per run: " + ", ".join(f"{b:.0f} GB/s" for b in merged["copy_bw_GBps"]))
    summarize(merged["rows"], merged["checks"], 0)


def _spread(xs):
    xs = sorted(xs)
    return f"min {xs[0]:.2f}  median {statistics.median(xs):.2f}  max {xs[-1]:.2f}  ({len(xs)} points)"


def compare(old_path, new_path):
    """Old time / new time at every point both runs measured."""
    key = lambda r: (r["shape"], r["bits"], r["layout"], r["batch"])  # noqa: E731
    old = {key(r): r["us"] for r in json.load(open(old_path))["rows"]}
    rows = json.load(open(new_path))["rows"]
    pairs = [(key(r), old[key(r)] / r["us"]) for r in rows if key(r) in old]
    print(f"speedup of {new_path} over {old_path} (old µs / new µs)")
    for m in sorted({k[3] for k, _ in pairs}):
        print(f"  batch {m:<3}  " + _spread([x for k, x in pairs if k[3] == m]))
    for b in sorted({k[1] for k, _ in pairs}):
        print(f"  batch 1, {b}-bit  " + _spread([x for k, x in pairs if k[3] == 1 and k[1] == b]))
    for lay in sorted({k[2] for k, _ in pairs}):
        print(f"  {lay:8s}  " + _spread([x for k, x in pairs if k[2] == lay]))
    # in NEW: the same launch with and without one option (key parts, see KernelConfig.key)
    for label, part, base in (("mma num_stages=2 vs 1", "s2", "s1"), ("mma num_stages=3 vs 2", "s3", "s2"),
                              ("register cap 128 vs none", "r128", None),
                              ("two accumulator chains vs one (:c2, commit d263051)", "c2", None),
                              ("activations prefetched into L1 one k-tile step ahead (:p1, dropped)", "p1", None),
                              ("activations loaded one k-tile step ahead (:x1, commit 7b383b7)", "x1", None),
                              ("units outer vs byte lanes outer (:u1)", "u1", None)):
        ratios, best = [], []
        for r in rows:
            times = {c: t for c, t in r["tried"].items() if isinstance(t, float)}
            with_, without = [], []
            for c, t in times.items():
                keys = c.split(":")
                if part in keys:
                    with_.append(t)
                    other = ":".join(k if k != part else base for k in keys if k != part or base is not None)
                    if other in times:
                        ratios.append(times[other] / t)
                elif base is None or base in keys:
                    without.append(t)
            if with_ and without:
                best.append(min(without) / min(with_))
        if ratios:
            print(f"  {label} (µs without / µs with): same launch  " + _spread(ratios))
            print(f"  {label} (µs without / µs with): best of each per point  " + _spread(best))


def summarize(rows, checks, skipped):
    from matgptq.kernels.configs import KernelConfig

    print("\n=== table (µs; % of copy bandwidth; speedup vs fp16 F.linear) ===")
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    batches = sorted(set(r["batch"] for r in rows))
    for layout in ("fixed", "resident"):
        for shape in shapes:
            for bits in sorted(set(r["bits"] for r in rows)):
                cells = []
                for m in batches:
                    r = next((r for r in rows if r["shape"] == shape and r["bits"] == bits and r["layout"] == layout
                              and r["batch"] == m), None)
                    cells.append("        -" if r is None else f"{r['us']:7.1f}/{r['pct_copy']:3.0f}%/x{r['speedup_vs_fp16']:.1f}")
                if any(c.strip() != "-" for c in cells):
                    print(f"{layout:8s} {shape:>11} b{bits}  " + "  ".join(cells))
    print("batches: " + " ".join(map(str, batches)))
    print("\n=== acceptance ===")
    big = [r for r in rows if r["out"] * r["inp"] >= 4096 * 14336]
    a1 = [(r["shape"], r["bits"], r["pct_copy"]) for r in big if r["batch"] == 1 and r["layout"] == "fixed"]
    fail1 = [(s, b, p) for s, b, p in a1 if p < (80 if b in (4, 6, 8) else 65)]
    print(f"A1 batch 1 fixed, shapes >= 4096x14336: >=80% at 4/6/8 bits, >=65% at 2/3: "
          f"{'PASS' if a1 and not fail1 else 'FAIL'} ({len(a1)} points, misses: {fail1})")
    for r in big:
        if r["batch"] == 1 and r["layout"] == "fixed" and r.get("read_us"):
            print(f"   {r['shape']:>11} b{r['bits']}: {r['us']:6.2f} µs ({r['pct_copy']:5.1f}%); a plain read of the same "
                  f"{r['bytes'] / 1e6:.1f} MB takes {r['read_us']:6.2f} µs ({100 * r['read_us'] / r['us']:.0f}% of the kernel's time)")
    le16 = [r for r in rows if r["batch"] <= 16]
    fail2 = [(r["shape"], r["bits"], r["layout"], r["batch"], r["us"], r["fp16_us"]) for r in le16 if r["us"] > r["fp16_us"]]
    sp = [r["fp16_us"] / r["us"] for r in le16]
    print(f"A2a batch <= 16 never slower than fp16 F.linear: {'PASS' if le16 and not fail2 else 'FAIL'} "
          f"({len(le16)} points, {min(sp, default=0):.2f}-{max(sp, default=0):.2f}x its speed, misses: {fail2})")
    ge32 = [r for r in rows if r["batch"] >= 32 and r["deq_cublas_us"]]
    fail3 = [(r["shape"], r["bits"], r["layout"], r["batch"], r["us"], r["deq_cublas_us"]) for r in ge32
             if r["us"] > 1.1 * r["deq_cublas_us"]]
    worst3 = max((r["us"] / r["deq_cublas_us"] for r in ge32), default=0)
    print(f"A2b batch >= 32 within 10% of dequantize + cuBLAS: {'PASS' if ge32 and not fail3 else 'FAIL'} "
          f"({len(ge32)} points, at most {worst3:.2f}x its time, misses: {fail3})")
    ratios = []
    for r in rows:
        if r["layout"] != "resident":
            continue
        f = next((x for x in rows if x["layout"] == "fixed" and x["shape"] == r["shape"] and x["bits"] == r["bits"]
                  and x["batch"] == r["batch"]), None)
        if f:
            ratios.append((r["shape"], r["bits"], r["batch"], round(r["us"] / f["us"], 2)))
    fail4 = [x for x in ratios if x[3] > 1.3]
    worst = max(ratios, key=lambda x: x[3]) if ratios else None
    print(f"A3 resident within 1.3x of fixed at the same b: {'PASS' if ratios and not fail4 else 'FAIL'} "
          f"({len(ratios)} points, worst {worst}, misses: {fail4})")
    bad = [c for c in checks if not c["ok"]]
    bs = sorted(set(c["batch"] for c in checks))
    print(f"A4 correctness on the GPU, batches {bs}: {'PASS' if checks and not bad else 'FAIL'} "
          f"({len(checks)} kernel runs, max rel err {max((c['rel_err'] for c in checks), default=0):.1e}, "
          f"failed {len(bad)})")
    # which launches the tuner chose (config keys: see matgptq.kernels.configs.KernelConfig.key)
    cfgs = [KernelConfig.from_key(r["config"]) for r in rows if r["config"] != "cublas"]
    shared = [c for c in cfgs if c.kind == "mma" and c.k_unroll == 1 and c.bn // 16 > c.num_warps]
    print(f"chosen launches: {sum(c.kind == 'mma' for c in cfgs)} mma ({len(shared)} with several row tiles per warp, "
          f"{sum(c.max_regs > 0 for c in cfgs)} register-capped, "
          f"{sum(c.kind == 'mma' and c.num_stages == 3 for c in cfgs)} with num_stages=3, "
          f"{sum(c.units_outer for c in cfgs)} units-outer), {sum(c.kind == 'gemm' for c in cfgs)} gemm, "
          f"{sum(c.kind == 'gemv' for c in cfgs)} gemv, {len(rows) - len(cfgs)} cublas of {len(rows)} points; "
          f"batch 16 on mma: {sum(r['config'].startswith('mma') for r in rows if r['batch'] == 16)} of "
          f"{sum(r['batch'] == 16 for r in rows)}")
    if skipped:
        print(f"NOTE: {skipped} points skipped by --time-limit")


if __name__ == "__main__":
    sys.exit(main())
