"""Triton kernels against a float64 dequantized reference (CPU, TRITON_INTERPRET=1).

Outputs are poisoned with NaN before every launch, so an element a kernel leaves unwritten
fails. Shapes are small and odd (rows not a multiple of the row tile, K not a multiple of the
512-wide k-tile) so the interpreter stays fast.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

from dataclasses import replace

import pytest
import torch

pytest.importorskip("triton")

from matgptq.kernels import dispatch  # noqa: E402
from matgptq.kernels.configs import KernelConfig  # noqa: E402
from matgptq.kernels.dispatch import dequantize_triton, quant_matmul, run_config  # noqa: E402
from matgptq.kernels.pack import pack  # noqa: E402
from matgptq.quant.grid import dequantize  # noqa: E402

TOL = {torch.float16: 1e-3, torch.bfloat16: 8e-3}
GEMV = KernelConfig("gemv", bn=32, split_k=1)
GEMM = KernelConfig("gemm", bn=32, bm=16, split_k=1)
MMA = KernelConfig("mma", bn=32, bm=8, split_k=1, num_warps=2)


def _case(n, k, gs, rule, layout, bits, m=8, asym=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    groups = 1 if gs is None else k // gs
    q = torch.randint(0, 1 << m, (n, k), generator=g, dtype=torch.uint8)
    s = (torch.rand(n, groups, generator=g) * 0.02 + 1e-3).half()
    z = (torch.randint(0, 1 << m, (n, groups), generator=g) if asym
         else torch.full((n, groups), 1 << (m - 1))).to(torch.uint8)
    pw = pack(q, s, z, master_bits=m, slicing=rule, group_size=gs, layout=layout, bits=bits)
    return pw, dequantize(q, s, z, m, bits, rule, gs, torch.float64)


def _check(out, x, w, bias=None):
    ref = x.double() @ w.t()
    if bias is not None:
        ref += bias.double()
    assert torch.isfinite(out).all(), "an output element was left unwritten (NaN poison survived)"
    err = ((out.double() - ref).norm() / ref.norm()).item()
    assert err < TOL[x.dtype], f"relative error {err:.2e}"


def _run(cfg, x, pw, bits, bias=None):
    out = torch.full((x.shape[0], pw.n), float("nan"), dtype=x.dtype)
    run_config(cfg, x, pw, bits, out, bias)
    return out


@pytest.mark.parametrize("layout", ["fixed", "resident"])
@pytest.mark.parametrize("rule", ["round", "nested"])
def test_every_width_both_kernels(layout, rule):
    """Every width 2..8 through the CUDA-core, the warp-level mma and the tensor-core kernel
    (40 x 72: one padded k-tile, rows masked)."""
    for bits in range(2, 9):
        pw, w = _case(40, 72, None, rule, layout, bits, seed=bits)
        g = torch.Generator().manual_seed(bits)
        x1 = torch.randn(1, 72, generator=g).half()
        _check(_run(GEMV, x1, pw, bits), x1, w)
        _check(_run(MMA, x1, pw, bits), x1, w)
        x8 = torch.randn(8, 72, generator=g).half()
        _check(_run(MMA, x8, pw, bits), x8, w)
        x9 = torch.randn(9, 72, generator=g).half()
        _check(_run(GEMM, x9, pw, bits), x9, w)
        x16 = torch.randn(16, 72, generator=g).half()
        _check(_run(MMA, x16, pw, bits), x16, w)  # two sets of batch rows on the same codes


@pytest.mark.parametrize("batch", [1, 2, 3, 5, 7, 8, 9, 16, 33])
def test_every_batch_size_through_dispatch(batch):
    """Every kernel (the CUDA-core one up to 8 rows, the mma one up to 16) and the automatic
    choice (the mma kernel up to 16 fp16 rows, else CUDA cores up to 2, tensor cores above) at
    batch sizes that are not powers of two; groups of 32, asymmetric zeros, 3 k-tiles split three
    ways."""
    pw, w = _case(48, 1536, 32, "round", "resident", 3, asym=True, seed=batch)
    x = torch.randn(batch, 1536, generator=torch.Generator().manual_seed(batch)).half()
    for kind in (["gemv"] if batch <= 8 else []) + (["mma"] if batch <= 16 else []) + ["gemm"]:
        cfg = KernelConfig(kind, bn=32, bm=8 if kind == "mma" else 16 if batch <= 16 else 64, split_k=3)
        _check(_run(cfg, x, pw, 3), x, w)
    assert dispatch.configs.heuristic(pw.n, pw.k_tiles, batch, 4).kind == ("gemv" if batch <= 2 else "gemm")
    assert dispatch.configs.heuristic(pw.n, pw.k_tiles, batch, 4, mma=True).kind == (
        "mma" if batch <= 16 else "gemm")
    out = quant_matmul(x.view(batch, 1, 1536), pw, 3, backend="triton")
    assert out.shape == (batch, 1, 48)
    _check(out.view(batch, 48), x, w)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("gs,layout,bits", [(64, "fixed", 6), (None, "resident", 5), (128, "fixed", 7)])
def test_dtypes_groups_bias_and_split_k(dtype, gs, layout, bits):
    pw, w = _case(72, 1024, gs, "nested", layout, bits, asym=gs == 64, seed=bits)
    g = torch.Generator().manual_seed(1)
    bias = torch.randn(72, generator=g).to(dtype)
    for m, cfg in ((1, KernelConfig("gemv", bn=64, split_k=2)), (4, KernelConfig("gemv", bn=32, split_k=2)),
                   (20, KernelConfig("gemm", bn=64, bm=32, split_k=2))):
        x = torch.randn(m, 1024, generator=g).to(dtype)
        _check(_run(cfg, x, pw, bits, bias), x, w, bias)


def test_split_k_counters_reset_and_results_repeat():
    pw, w = _case(40, 1536, 128, "round", "fixed", 4, seed=9)
    x = torch.randn(2, 1536, generator=torch.Generator().manual_seed(9)).half()
    cfg = KernelConfig("gemv", bn=32, split_k=3)
    a = _run(cfg, x, pw, 4)
    b = _run(cfg, x, pw, 4)
    assert torch.equal(a, b)  # fixed summation order: deterministic
    _check(a, x, w)
    _, cnt = dispatch._workspace(x.device, 0, 0)
    assert int(cnt.abs().sum()) == 0  # the last program of every tile reset its counter


def test_resident_switches_width_without_repacking():
    pw, _ = _case(40, 600, None, "nested", "resident", 8, seed=5)
    x = torch.randn(3, 600, generator=torch.Generator().manual_seed(5)).half()
    ptr = pw.qweight.data_ptr()
    for bits in (8, 4, 2, 6):
        _, w = _case(40, 600, None, "nested", "resident", bits, seed=5)
        _check(quant_matmul(x, pw, bits, backend="triton"), x, w)
    assert pw.qweight.data_ptr() == ptr


def test_dequantize_kernel_and_large_batch_path():
    pw, w = _case(40, 600, None, "round", "resident", 3, asym=True, seed=6)
    wt = dequantize_triton(pw, 3, torch.float32)
    assert torch.allclose(wt.double(), w, rtol=1e-6, atol=1e-7)
    x = torch.randn(5, 600, generator=torch.Generator().manual_seed(6)).half()
    _check(_run(KernelConfig("cublas"), x, pw, 3), x, w)


def test_torch_backend_and_errors():
    pw, w = _case(40, 72, None, "round", "fixed", 4, seed=7)
    x = torch.randn(2, 72, generator=torch.Generator().manual_seed(7)).half()
    _check(quant_matmul(x, pw, 4, backend="torch"), x, w)
    with pytest.raises(ValueError, match="features"):
        quant_matmul(torch.randn(2, 71).half(), pw, 4)
    with pytest.raises(ValueError, match="only the 4-bit slice"):
        quant_matmul(x, pw, 3)
    with pytest.raises(ValueError, match="mma kernel serves fp16"):
        _run(KernelConfig("mma", bm=8), x.bfloat16(), pw, 4)
    assert dispatch.choose_config(x.bfloat16(), pw, 4).kind != "mma"  # bf16 takes the other kernels
    assert dispatch.choose_config(x, pw, 4).kind == "mma"
    xs = torch.randn(2, 73, generator=torch.Generator().manual_seed(7)).half()[:, 1:]  # rows 2 bytes off
    assert dispatch.choose_config(xs, pw, 4).kind != "mma"  # the mma entry is set aside for this call only
    assert dispatch.choose_config(x, pw, 4).kind == "mma"
    _check(quant_matmul(xs, pw, 4, backend="triton"), xs, w)


@pytest.mark.parametrize("cfg", [
    KernelConfig("gemv", bn=32, bm=4, split_k=2),
    KernelConfig("gemv", bn=64, bm=4, split_k=1, num_warps=8),
    KernelConfig("gemv", bn=32, bm=4, split_k=2, num_stages=3),
    KernelConfig("gemv", bn=32, bm=1, split_k=1, num_stages=3),
    KernelConfig("gemm", bn=32, bm=16, split_k=2),
    KernelConfig("gemm", bn=64, bm=32, split_k=1),
    KernelConfig("gemm", bn=32, bm=64, split_k=3),
    KernelConfig("mma", bn=64, bm=8, split_k=2, num_warps=4),
    KernelConfig("mma", bn=16, bm=8, split_k=3, num_warps=1, num_stages=2),
    KernelConfig("mma", bn=32, bm=8, split_k=1, num_warps=1),
    KernelConfig("mma", bn=64, bm=8, split_k=2, num_warps=2, max_regs=128),
    KernelConfig("mma", bn=32, bm=8, split_k=1, num_warps=4, k_unroll=2),
    KernelConfig("mma", bn=16, bm=8, split_k=2, num_warps=2, num_stages=2, k_unroll=2),
    KernelConfig("mma", bn=16, bm=8, split_k=1, num_warps=1, k_unroll=4),
    KernelConfig("mma", bn=16, bm=8, split_k=1, num_warps=1, num_stages=3),
    KernelConfig("mma", bn=32, bm=8, split_k=2, num_warps=2, num_stages=3, k_unroll=2),
    KernelConfig("mma", bn=32, bm=8, split_k=2, num_warps=1, num_stages=2, units_outer=1),
    KernelConfig("mma", bn=64, bm=8, split_k=1, num_warps=8, k_unroll=2, units_outer=1),
], ids=lambda c: c.key())
@pytest.mark.parametrize("rule,layout,bits", [("round", "resident", 3), ("nested", "fixed", 8), ("round", "fixed", 5)])
def test_launch_variants(cfg, rule, layout, bits):
    """Tile, warp and split variants over 3 k-tiles (the last one partial), groups of 32,
    asymmetric zeros: what the tuner may pick must be as correct as the defaults (3 rows; the
    mma kernel also at 13, its two sets of batch rows)."""
    pw, w = _case(40, 1408, 32, rule, layout, bits, asym=True, seed=bits)
    for m in (3, 13) if cfg.kind == "mma" else (3,):
        x = torch.randn(m, 1408, generator=torch.Generator().manual_seed(bits + m)).half()
        _check(_run(cfg, x, pw, bits), x, w)


@pytest.mark.parametrize("gs", [128, None])
def test_units_outer_with_whole_lane_groups(gs):
    """units_outer=1 with groups of 128 (one per byte lane) and one group per row: every lane's
    sums start at unit 0 and are scaled after unit 7, while the lanes take turns."""
    cfg = KernelConfig("mma", bn=16, bm=8, split_k=2, num_warps=1, num_stages=2, units_outer=1)
    pw, w = _case(32, 1536, gs, "nested", "resident", 4, asym=gs is not None, seed=7)
    for m in (1, 9):
        x = torch.randn(m, 1536, generator=torch.Generator().manual_seed(m)).half()
        _check(_run(cfg, x, pw, 4), x, w)


@pytest.mark.parametrize("stages", [1, 3])
def test_bounds_switch_reads_the_first_k_tiles(monkeypatch, stages):
    """benchmarks/kernel_bounds.py's dispatch.MMA_DIAG = 7: every stream read from the program's first
    k-tiles. With all k-tiles alike (codes, scales, zeros and activations repeat every 512
    columns) that changes nothing; with random ones the result is wrong, so the switch is live."""
    cfg = KernelConfig("mma", bn=16, bm=8, split_k=2, num_warps=1, num_stages=stages)
    g = torch.Generator().manual_seed(3)
    q = torch.randint(0, 256, (32, 512), generator=g, dtype=torch.uint8).repeat(1, 3)
    s = (torch.rand(32, 4, generator=g) * 0.02 + 1e-3).half().repeat(1, 3)
    z = torch.randint(0, 256, (32, 4), generator=g).to(torch.uint8).repeat(1, 3)
    pw = pack(q, s, z, master_bits=8, slicing="nested", group_size=128, layout="fixed", bits=4)
    w = dequantize(q, s, z, 8, 4, "nested", 128, torch.float64)
    x = torch.randn(1, 512, generator=g).half().repeat(1, 3)
    monkeypatch.setattr(dispatch, "MMA_DIAG", 7)
    _check(_run(cfg, x, pw, 4), x, w)
    pw2, w2 = _case(32, 1536, 128, "nested", "fixed", 4, asym=True, seed=5)
    x2 = torch.randn(1, 1536, generator=g).half()
    ref = x2.double() @ w2.t()
    assert ((_run(cfg, x2, pw2, 4).double() - ref).norm() / ref.norm()).item() > 0.05


def test_config_keys_round_trip_and_bad_configs_are_refused():
    """Every launch the tuner may try and every entry of the shipped table survives key() ->
    from_key(); a malformed key, an unknown kernel or an impossible k_unroll is refused with the fix in the message."""
    from matgptq.kernels import configs

    seen = [c for m in (1, 3, 8, 16, 64) for b in (2, 8) for c in configs.candidates(4096, 28, m, 132, mma=True, bits=b)]
    seen += [KernelConfig(**e) for e in configs._table().values()]
    assert any(c.k_unroll > 1 for c in seen) and any(c.max_regs for c in seen) and any(c.num_stages == 3 for c in seen)
    for c in seen:
        assert KernelConfig.from_key(c.key()) == c, c
    with pytest.raises(ValueError, match="unknown part 'x3'.*bm<int>"):
        KernelConfig.from_key("mma:bm8:x3")
    with pytest.raises(ValueError, match="use 1, 2, 4 or 8"):
        KernelConfig("mma", k_unroll=3)
    with pytest.raises(ValueError, match="only the 'mma' and 'lop3' kernels"):
        KernelConfig.from_key("gemv:bm1:bn64:sk4:w4:s1:ku2")
    with pytest.raises(ValueError, match="k_unroll=4 with num_warps=2, kind='lop3'.*divides num_warps"):
        KernelConfig.from_key("lop3:bm16:bn16:sk1:w2:s4:ku4")
    lop3 = KernelConfig.from_key("lop3:bm16:bn16:sk1:w8:s4:ku8")
    assert lop3.k_unroll == 8 and KernelConfig.from_key(lop3.key()) == lop3
    lop3s = configs.lop3_candidates(4096, 112, 1, 132, bits=2)
    overlap = configs.lop3_overlap_variants(lop3s[:3])  # per launch: p1, p2, pf, p1+pf, p2+pf
    assert [(c.pdl, c.l2_prefetch) for c in overlap] == [(1, 0), (2, 0), (0, 1), (1, 1), (2, 1)] * 3
    assert all(KernelConfig.from_key(c.key()) == c for c in overlap)
    assert [replace(c, pdl=0, l2_prefetch=0) for c in overlap[::5]] == lop3s[:3]
    assert configs.lop3_overlap_variants(overlap) == []
    assert configs.lop3_overlap_variants(lop3s[:3], l2_prefetch=False) == [c for c in overlap if not c.l2_prefetch]
    assert overlap[4].key().endswith(":p2:pf1") and KernelConfig.from_key("lop3:bm16:bn64:sk4:w4:s4:pf1").l2_prefetch
    refusals = (("mma:bm8:bn64:sk1:w4:s1:pf1", "l2_prefetch=1 with kind='mma'.*use 0, or 1 .* with kind='lop3'"),
                ("lop3:bm16:bn64:sk1:w4:s4:pf2", "l2_prefetch=2 with kind='lop3'"),
                ("mma:bm8:bn64:sk1:w4:s1:p1", "pdl=1 with kind='mma'.*use 0, or 1 .* with kind='lop3'"),
                ("lop3:bm16:bn64:sk1:w4:s4:p3", "pdl=3 with kind='lop3'"),
                ("mma:bm8:bn64:sk1:w4:s1:r100", "max_regs=100; use 0 .* multiple of 8 in 32..255"),
                ("gemm:bm16:bn64:sk1:w4:s1:u1", "units_outer=1 with kind='gemm': it orders the mma kernel's"),
                ("mma:bm8:bn64:sk1:w4:s4", "num_stages=4 with kind='mma': use 1 .*, 2 or 3"),
                # before: run_config served an unknown kind with cuBLAS
                ("mmx:bm8:bn64:sk1:w4:s1", "kind='mmx'; use one of mma, gemv, gemm, cublas"))
    for key, msg in refusals:
        with pytest.raises(ValueError, match=msg):
            KernelConfig.from_key(key)


def test_autotuner_times_the_best_lop3_launches_again_with_pdl(monkeypatch):
    """dispatch._autotune with made-up timings (no GPU): every candidate timed once, one that fails
    skipped, then the LOP3_OVERLAP_TOP best lop3 launches again with pdl 1 and 2 and the L2
    prefetch, alone and together, and the fastest of all chosen, as an exhaustive min over the same
    made-up times says; the fixed layout gets no such round."""
    import triton.testing
    from types import SimpleNamespace

    from matgptq.kernels import configs

    def made_up(cfg):  # deterministic, uneven, PDL 2 faster on some launches and slower on others
        t = 10 + (cfg.split_k * 7 + cfg.num_warps * 3 + cfg.num_stages + 5 * cfg.k_unroll) % 11
        t *= {0: 1.0, 1: 1.04, 2: 0.93 if cfg.split_k % 2 else 1.08}[cfg.pdl]
        return t * (0.97 if cfg.l2_prefetch and cfg.num_warps == 4 else 1.02 if cfg.l2_prefetch else 1.0)

    ran = []
    monkeypatch.setattr(dispatch, "run_config", lambda cfg, *a: ran.append(cfg))
    monkeypatch.setattr(dispatch, "lop3_supported", lambda x2, pw: True)
    monkeypatch.setattr(dispatch, "mma_supported", lambda x2, pw: True)

    def bench(fn, **kw):
        fn()
        if ran[-1] == failing:
            raise RuntimeError("out of shared memory")
        return made_up(ran[-1])
    monkeypatch.setattr(triton.testing, "do_bench", bench)
    x2 = torch.zeros(1, 14336, dtype=torch.float16)
    pw = SimpleNamespace(layout="lop3", n=4096, k=14336)
    cands = configs.lop3_candidates(4096, 112, 1, 4, 2)
    failing = min(cands, key=made_up)  # the fastest base launch does not run: the tuner must skip it
    monkeypatch.setattr(configs, "LOP3_TUNE_L2_PREFETCH", True)
    chosen = dispatch._autotune(x2, pw, 2, None)
    ok = [c for c in cands if c != failing]
    top = sorted(ok, key=made_up)[:configs.LOP3_OVERLAP_TOP]
    tried = ok + [replace(c, pdl=p, l2_prefetch=f) for c in top for f in (0, 1) for p in (0, 1, 2) if p or f]
    assert ran == cands + tried[len(ok):]
    assert chosen == min(tried, key=made_up) and chosen.pdl == 2 and chosen.l2_prefetch == (chosen.num_warps == 4)
    ran.clear()  # with the L2 prefetch left out of the round (LOP3_TUNE_L2_PREFETCH, off until checked on a GPU)
    monkeypatch.setattr(configs, "LOP3_TUNE_L2_PREFETCH", False)
    chosen = dispatch._autotune(x2, pw, 2, None)
    tried = ok + [replace(c, pdl=p) for c in top for p in (1, 2)]
    assert ran == cands + tried[len(ok):] and chosen == min(tried, key=made_up)
    ran.clear()
    pw = SimpleNamespace(layout="fixed", n=4096, k_tiles=112)
    failing = None
    chosen = dispatch._autotune(x2, pw, 4, None)
    assert ran == configs.candidates(4096, 112, 1, 4, True, 4) and not any(c.pdl or c.l2_prefetch for c in ran)
    assert chosen == min(ran, key=made_up)


def test_merge_tuned_table(tmp_path):
    """benchmarks/merge_tuned.py: a run's launches replace the table's and new keys are added;
    an old entry without the newer fields that means the same launch is no change and stays
    as written; later files win; a bad entry or a result file is refused before anything is
    written; --dry-run writes nothing; what it writes loads back as the same launches."""
    import importlib.util
    import json
    from dataclasses import asdict
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "merge_tuned.py"
    spec = importlib.util.spec_from_file_location("merge_tuned", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    key = "GPU X|4096x14336|m1|lop2|g128s|float16"
    old_entry = {"kind": "lop3", "bn": 64, "bm": 16, "split_k": 8, "num_warps": 4, "num_stages": 4, "k_unroll": 1}
    table = tmp_path / "tuned.json"
    table.write_text(json.dumps({key: old_entry, key.replace("lop2", "lop4"): old_entry}, indent=0))
    before = table.read_text()
    p2 = asdict(KernelConfig.from_key("lop3:bm16:bn64:sk7:w4:s4:p2"))
    run1, run2 = tmp_path / "a.json", tmp_path / "b.json"
    run1.write_text(json.dumps({key: asdict(KernelConfig.from_key("lop3:bm16:bn64:sk4:w4:s4")),
                                key.replace("lop2", "lop4"): asdict(KernelConfig(**old_entry)),
                                key.replace("m1", "m2"): p2}))
    run2.write_text(json.dumps({key: p2}))
    assert mod.merge([str(run1), str(run2)], table, dry_run=True) == [
        (key, "lop3:bm16:bn64:sk8:w4:s4", "lop3:bm16:bn64:sk7:w4:s4:p2"),
        (key.replace("m1", "m2"), "-", "lop3:bm16:bn64:sk7:w4:s4:p2")]
    assert table.read_text() == before
    bad = tmp_path / "bad.json"
    for text, msg in ((json.dumps({key: dict(p2, pdl=3)}), "is not a valid launch.*pdl=3"),
                      (json.dumps({"rows": []}), "not a tuned table"), (json.dumps({"a|b": p2}), "not a table key"),
                      ("{", "cannot read it as JSON")):
        bad.write_text(text)
        with pytest.raises(SystemExit, match=msg):
            mod.merge([str(run1), str(bad)], table)
        assert table.read_text() == before
    assert len(mod.merge([str(run1), str(run2)], table)) == 2
    got = json.loads(table.read_text())
    assert got[key] == p2 and got[key.replace("lop2", "lop4")] == old_entry and got[key.replace("m1", "m2")] == p2
    assert KernelConfig(**got[key]).key() == "lop3:bm16:bn64:sk7:w4:s4:p2"
    assert mod.merge([str(run2)], table) == []
    run3 = tmp_path / "c.json"  # a later file setting a key back to what the table holds: no change
    run3.write_text(json.dumps({key: p2 | {"pdl": 0}, key.replace("m1", "m4"): p2}))
    run4 = tmp_path / "d.json"
    run4.write_text(json.dumps({key: p2}))
    assert mod.merge([str(run3), str(run4)], table, dry_run=True) == [(key.replace("m1", "m4"), "-",
                                                                      "lop3:bm16:bn64:sk7:w4:s4:p2")]
