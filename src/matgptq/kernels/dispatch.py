"""``quant_matmul(x, packed, bits)``: y = x · Ŵ_bᵀ (+ bias) for any batch, on the best path.

CUDA (or the Triton interpreter, ``backend="triton"``): the warp-level mma kernel for fp16
batches up to 16 (:mod:`.mma`), the CUDA-core kernel for other small batches, the tensor-core
``tl.dot`` kernel for larger ones, and dequantize + cuBLAS for very large ones, each with a tuned
configuration (:mod:`.configs`). The ``lop3`` layout: its own kernel for fp16 batches up to 32
on a GPU (:mod:`.lop3_kernel`, Gluon; 16 rows a launch), its ``tl.dot`` kernel (:mod:`.lop3_gemm`)
for larger batches, bf16 and the interpreter, and dequantize + cuBLAS for very large ones.
Elsewhere: plain torch (dequantize, then matmul).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from . import configs
from .configs import KernelConfig
from .pack import KTILE, V, PackedWeight, ReadPlan, dequantize_packed
from .triton_decode import lane_consts, triton

# The mma kernel's DIAG switch (bit 0 / 1 / 2: activations / codes / scales read from the first
# k-tiles): set only by benchmarks/kernel_bounds.py and profile_kernel.py --diag; results are wrong.
MMA_DIAG = 0


def triton_available() -> bool:
    return triton is not None


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def kernel_supported(pw: PackedWeight, bits: int) -> bool:
    """Shapes and widths the kernels serve (others fall back to plain torch)."""
    if pw.layout == "lop3":
        return pw.servable(bits)
    g = pw.group_size
    return pw.read_plan(bits).kernel_ok and (g is None or g % V == 0)


def inline_asm_ok() -> bool:
    """Byte permutes (inline PTX) on a GPU; the interpreter and ``MATGPTQ_NO_PRMT=1`` take the
    shift-and-mask forms."""
    return not interpreting() and os.environ.get("MATGPTQ_NO_PRMT", "0") != "1"


def use_prmt(bits: int) -> bool:
    """One byte permute per weight into an fp32 value, where the codes fit 7 bits."""
    return bits <= 7 and inline_asm_ok()


def _consts(pw: PackedWeight, plan: ReadPlan) -> dict:
    offs = [0]
    for w in plan.widths:
        offs.append(offs[-1] + w)
    return dict(
        V=V, G=pw.group_size or 0, B=plan.bits, NP=len(plan.widths), PW=plan.pw,
        PO=sum(o << (4 * j) for j, o in enumerate(offs)), RND=int(plan.round_part),
        NCH=offs[-1] + int(plan.round_part), CH=pw.code_bits, SYM=pw.zeros is None,
        PRMT=use_prmt(plan.bits),
        UG=8 if not pw.group_size else min(8, pw.group_size // V),  # units per scale group
        ROTM=pw.master_bits if pw.layout == "resident" else 0,  # strided, rotated parts
    ) | dict(RAW=False)


def _with_raw(c: dict) -> dict:
    """RAW: a single part read without rounding bit and without byte permutes is decoded
    straight from the packed word."""
    c["RAW"] = c["NP"] == 1 and c["RND"] == 0 and not c["PRMT"] and c["ROTM"] == 0
    return c


_workspaces: dict = {}


def _workspace(device: torch.device, floats: int, counters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A per-device fp32 partial-sum buffer and zeroed tile counters (kernels reset them)."""
    key = (device.type, device.index)
    ws, cnt = _workspaces.get(key, (None, None))
    if ws is None or ws.numel() < floats:
        ws = torch.empty(max(floats, 1 << 16), dtype=torch.float32, device=device)
    if cnt is None or cnt.numel() < counters:
        cnt = torch.zeros(max(counters, 4096), dtype=torch.int32, device=device)
    _workspaces[key] = (ws, cnt)
    return ws, cnt


def _sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def fmt_key(pw: PackedWeight, bits: int, dtype: torch.dtype) -> str:
    plan = pw.read_plan(bits)
    rnd = "r" if plan.round_part else ""
    zs = "s" if pw.zeros is None else "a"
    return f"{pw.layout[:3]}{bits}{rnd}|g{pw.group_size or 0}{zs}|{str(dtype)[6:]}"


def _launch(x2: torch.Tensor, pw: PackedWeight, bits: int, cfg: KernelConfig, tiles: int):
    """What both matmul kernels share: the k-tiles per program and split count, the split-K
    workspace for ``tiles`` output tiles, the layout constants and the leading arguments."""
    plan = pw.read_plan(bits)
    m, n, kt = x2.shape[0], pw.n, pw.k_tiles
    per = -(-kt // max(1, cfg.split_k))
    per = -(-per // cfg.k_unroll) * cfg.k_unroll  # whole groups of k-tiles loaded together
    split = -(-kt // per)
    ws, cnt = _workspace(x2.device, split * m * n if split > 1 else 0, tiles)
    c = _with_raw(_consts(pw, plan))
    lam, mu = lane_consts(plan.bits, c["PRMT"])
    args = (m, n, pw.k, kt, pw.scales.shape[0], per, split)
    return plan, split, ws, cnt, c, lam, mu, args


def _regs(cfg: KernelConfig) -> dict:
    """The register cap of a launch (Triton's ``maxnreg``), when the config sets one."""
    return {"maxnreg": cfg.max_regs} if cfg.max_regs else {}


def _buffers(x2, pw, out, bias, ws, cnt):
    return (x2, x2.stride(0), pw.qweight, pw.scales, pw.zeros if pw.zeros is not None else pw.scales,
            out, out.stride(0), bias if bias is not None else out, ws, cnt)


def launch_gemv(x2: torch.Tensor, pw: PackedWeight, bits: int, out: torch.Tensor, bias: torch.Tensor | None,
                cfg: KernelConfig) -> torch.Tensor:
    from .gemv import gemv_kernel

    grid_n = -(-pw.n // cfg.bn)
    plan, split, ws, cnt, c, lam, mu, args = _launch(x2, pw, bits, cfg, grid_n)
    m = x2.shape[0]
    bm = configs.next_pow2(m)
    half2 = plan.bits == 8 and inline_asm_ok()  # 8-bit codes: fp16 byte permutes instead of the fp32 ones
    if half2:
        lam, mu = 1.0, 1024.0
    gemv_kernel[(grid_n, split)](
        *_buffers(x2, pw, out, bias, ws, cnt), *args,
        lam * plan.two_d, lam * mu * plan.two_d, plan.zoff, plan.zconst,
        BM=bm, BN=cfg.bn, HAS_BIAS=bias is not None, EVEN=(bm == m and pw.k % KTILE == 0), HALF2=half2, NS=cfg.num_stages,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages, **_regs(cfg), **c,
    )
    return out


def launch_gemm(x2: torch.Tensor, pw: PackedWeight, bits: int, out: torch.Tensor, bias: torch.Tensor | None,
                cfg: KernelConfig) -> torch.Tensor:
    from .gemm import gemm_kernel

    tiles = (-(-pw.n // cfg.bn), -(-x2.shape[0] // cfg.bm))
    plan, split, ws, cnt, c, lam, mu, args = _launch(x2, pw, bits, cfg, tiles[0] * tiles[1])
    # fp16 on a GPU: byte permutes make 1024 + k directly (HALF2); v = 1 + k/256 (8-bit codes
    # without byte permutes) is not exact in bf16: feed the codes k there
    half2 = x2.dtype == torch.float16 and inline_asm_ok()
    codes = x2.dtype == torch.bfloat16 and not c["PRMT"] and plan.bits > 7
    if half2:
        lam, mu = 1.0, 1024.0
    c1, c0 = (plan.two_d, 0.0) if codes else (lam * plan.two_d, lam * mu * plan.two_d)
    gemm_kernel[(*tiles, split)](
        *_buffers(x2, pw, out, bias, ws, cnt), *args,
        lam, lam * mu, c1, c0, plan.zoff, plan.zconst,
        BM=cfg.bm, BN=cfg.bn, HAS_BIAS=bias is not None, EVEN=pw.k % KTILE == 0, CODES=codes, HALF2=half2, NS=cfg.num_stages,
        F32DOT=interpreting() and x2.dtype == torch.bfloat16,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages, **_regs(cfg), **c,
    )
    return out


def mma_supported(x2: torch.Tensor, pw: PackedWeight) -> bool:
    """The warp-level mma kernel: fp16 activations, at most 16 rows, rows 16-byte aligned. Its PTX
    needs Triton to vectorise the activation loads like the code loads (four per lane), which
    the GPU checks verified for aligned rows; other activations take the other kernels."""
    return (x2.dtype == torch.float16 and x2.shape[0] <= configs.MMA_MAX_M and x2.data_ptr() % 16 == 0
            and x2.stride(0) % 8 == 0)


def launch_mma(x2: torch.Tensor, pw: PackedWeight, bits: int, out: torch.Tensor, bias: torch.Tensor | None,
               cfg: KernelConfig) -> torch.Tensor:
    from .mma import LAM, mma_kernel

    if not mma_supported(x2, pw):
        raise ValueError(f"the mma kernel serves fp16 batches of at most {configs.MMA_MAX_M} rows starting at 16-byte aligned "
                         f"addresses, not {x2.dtype} x {tuple(x2.shape)} (row stride {x2.stride(0)}); pass "
                         "x.contiguous() with K a multiple of 8, or use a 'gemv' or 'gemm' config")
    grid_n = -(-pw.n // cfg.bn)
    plan, split, ws, cnt, c, _, _, args = _launch(x2, pw, bits, cfg, grid_n)
    mma_kernel[(grid_n, split)](
        *_buffers(x2, pw, out, bias, ws, cnt), *args,
        LAM * plan.two_d, 0.0, plan.zoff, plan.zconst,
        RT=cfg.bn // 16, HAS_BIAS=bias is not None, EVEN=pw.k % KTILE == 0, ASM=inline_asm_ok(),
        NS=cfg.num_stages, KU=cfg.k_unroll, HB=1 if x2.shape[0] <= 8 else 2, UO=cfg.units_outer,
        DIAG=MMA_DIAG,
        num_warps=cfg.num_warps, num_stages=1, **_regs(cfg), **c,
    )
    return out


def lop3_supported(x2: torch.Tensor, pw: PackedWeight) -> bool:
    """The lop3 layout's kernel: a GPU (not the interpreter), Triton with Gluon, fp16 activations,
    at most LOP3_MAX_M rows, rows 16-byte aligned (the activations are copied 16 bytes at a time)."""
    from .lop3_kernel import gluon_available

    return (pw.layout == "lop3" and x2.is_cuda and not interpreting() and gluon_available()
            and x2.dtype == torch.float16 and x2.shape[0] <= configs.LOP3_MAX_M and x2.data_ptr() % 16 == 0
            and x2.stride(0) % 8 == 0 and x2.stride(1) == 1)


def _lop3_zero(pw: PackedWeight, bits: int) -> tuple[float, float]:
    plan = pw.read_plan(bits)
    return plan.two_d, plan.zconst - plan.zoff  # 2^d, z_b of the symmetric grid


def launch_lop3(x2: torch.Tensor, pw: PackedWeight, bits: int, out: torch.Tensor, bias: torch.Tensor | None,
                cfg: KernelConfig, timeline: torch.Tensor | None = None) -> torch.Tensor:
    """Batches of up to 32 rows in launches of ``cfg.bm`` rows: 16 (one launch up to 16 rows), or 8
    (where the activations of 16 rows would not leave the programs enough shared memory).
    ``timeline``: the phase timestamps of the (last) launch's programs (lop3_kernel.launch_lop3)."""
    from . import lop3_kernel

    if not lop3_supported(x2, pw):
        raise ValueError(f"the lop3 kernel serves fp16 batches of at most {configs.LOP3_MAX_M} rows on a GPU (Triton "
                         f"with Gluon), starting at 16-byte aligned addresses, not {x2.dtype} x {tuple(x2.shape)} on "
                         f"{x2.device}; pass x.contiguous().half(), or use a 'gemm' or 'cublas' config")
    two_d, zb = _lop3_zero(pw, bits)
    ng = pw.k // 128
    split = -(-ng // -(-ng // cfg.split_k))
    per = min(cfg.bm, lop3_kernel.MAX_M)
    ws, cnt = _workspace(x2.device, split * min(per, x2.shape[0]) * pw.n if split > 1 else 0, pw.n // 16)
    for r0 in range(0, x2.shape[0], per):
        lop3_kernel.launch_lop3(x2[r0:r0 + per], pw.qweight, pw.scales, pw.n, pw.k, bits, two_d, zb,
                                out[r0:r0 + per], bias, ws, cnt, cfg.num_warps, cfg.num_stages, cfg.split_k,
                                timeline, cfg.k_unroll, cfg.pdl, cfg.l2_prefetch)
    return out


def launch_lop3_gemm(x2: torch.Tensor, pw: PackedWeight, bits: int, out: torch.Tensor, bias: torch.Tensor | None,
                     cfg: KernelConfig) -> torch.Tensor:
    from .lop3_gemm import lop3_gemm_kernel

    m, ng = x2.shape[0], pw.k // 128
    two_d, zb = _lop3_zero(pw, bits)
    asm = inline_asm_ok() and bits != 3  # v = v0 + k by a lop3 into the mantissa of v0 (fp16 1024, bf16 128)
    magic, v0 = ((0x64006400, 1024.0) if x2.dtype == torch.float16 else (0x43004300, 128.0)) if asm else (0, 0.0)
    gps = -(-ng // max(1, cfg.split_k))
    split = -(-ng // gps)
    tiles = (-(-pw.n // cfg.bn), -(-m // cfg.bm))
    ws, cnt = _workspace(x2.device, split * m * pw.n if split > 1 else 0, tiles[0] * tiles[1])
    lop3_gemm_kernel[(*tiles, split)](
        x2, x2.stride(0), pw.qweight, pw.scales, out, out.stride(0), bias if bias is not None else out, ws, cnt,
        m, pw.n, pw.scales.shape[1], ng, gps, split, two_d, two_d * v0 + zb,
        BM=cfg.bm, BN=cfg.bn, BITS=bits, HAS_BIAS=bias is not None,
        F32DOT=interpreting() and x2.dtype == torch.bfloat16, ASM=asm, MAGIC=magic, NS=cfg.num_stages,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return out


def dequantize_triton(pw: PackedWeight, bits: int, dtype: torch.dtype, out: torch.Tensor | None = None,
                      bn: int = 64) -> torch.Tensor:
    """Ŵ_b [N, K] in storage column order, written by one Triton launch."""
    from .gemm import dequant_kernel

    if pw.layout == "lop3":
        from .lop3_dequant import lop3_dequantize

        pw.check_bits(bits)
        return lop3_dequantize(pw.qweight, pw.scales, pw.n, pw.k, bits, *_lop3_zero(pw, bits), dtype, out)
    plan = pw.read_plan(bits)
    if out is None:
        out = torch.empty(pw.n, pw.k, dtype=dtype, device=pw.qweight.device)
    c = _with_raw(_consts(pw, plan))
    lam, mu = lane_consts(plan.bits, c["PRMT"])
    dequant_kernel[(-(-pw.n // bn), pw.k_tiles)](
        pw.qweight, pw.scales, pw.zeros if pw.zeros is not None else pw.scales, out, pw.n, pw.k,
        pw.scales.shape[0], lam, lam * mu, plan.two_d, plan.zoff, plan.zconst,
        BN=bn, num_warps=4, **c,
    )
    return out


_dequant_buffers: dict = {}


def _cublas(x2, pw, bits, out, bias):
    key = (x2.device.type, x2.device.index, x2.dtype)
    buf = _dequant_buffers.get(key)
    if buf is None or buf.numel() < pw.n * pw.k:
        buf = torch.empty(pw.n * pw.k, dtype=x2.dtype, device=x2.device)
        _dequant_buffers[key] = buf
    w = dequantize_triton(pw, bits, x2.dtype, buf[: pw.n * pw.k].view(pw.n, pw.k))
    torch.matmul(x2, w.t(), out=out)
    if bias is not None:
        out += bias
    return out


def run_config(cfg: KernelConfig, x2, pw, bits, out, bias):
    if cfg.kind == "gemv":
        return launch_gemv(x2, pw, bits, out, bias, cfg)
    if cfg.kind == "gemm":
        return (launch_lop3_gemm if pw.layout == "lop3" else launch_gemm)(x2, pw, bits, out, bias, cfg)
    if cfg.kind == "mma":
        return launch_mma(x2, pw, bits, out, bias, cfg)
    if cfg.kind == "lop3":
        return launch_lop3(x2, pw, bits, out, bias, cfg)
    if pw.layout == "lop3" and cfg.kind != "cublas":
        raise ValueError(f"a {cfg.kind!r} config cannot read the lop3 layout; use kind='lop3', 'gemm' or 'cublas'")
    return _cublas(x2, pw, bits, out, bias)


def _choose_lop3(x2: torch.Tensor, pw: PackedWeight, bits: int, bias, key: str) -> KernelConfig:
    """The lop3 layout: the table's or the tuner's choice, else the heuristic's (its Gluon kernel
    where that serves the call, the tensor-core kernel, dequantize + cuBLAS)."""
    dev, m = x2.device, x2.shape[0]
    kernel = lop3_supported(x2, pw)
    cfg = configs.recalled(key) or configs.lookup(_device_name(dev), pw.n, pw.k, m, fmt_key(pw, bits, x2.dtype))
    if cfg is not None and (cfg.kind != "lop3" or kernel):
        return cfg
    if (cfg is None and configs.autotune_enabled() and dev.type == "cuda" and not interpreting()
            and not torch.cuda.is_current_stream_capturing()):
        cfg = _autotune(x2, pw, bits, bias)
    else:
        cfg = configs.lop3_heuristic(pw.n, pw.k // 128, m, _sms(dev), bits, kernel)
    if kernel or x2.dtype != torch.float16:  # a misaligned fp16 x must not pin its key to the fallback
        configs.remember(key, cfg)
    return cfg


def choose_config(x2: torch.Tensor, pw: PackedWeight, bits: int, bias=None) -> KernelConfig:
    m = x2.shape[0]
    dev = x2.device
    fmt = fmt_key(pw, bits, x2.dtype)
    name = _device_name(dev)
    key = configs.table_key(name, pw.n, pw.k, m, fmt)
    if pw.layout == "lop3":
        return _choose_lop3(x2, pw, bits, bias, key)
    cfg = configs.recalled(key) or configs.lookup(name, pw.n, pw.k, m, fmt)
    mma = mma_supported(x2, pw)
    if cfg is not None and (cfg.kind != "mma" or mma):
        return cfg
    if cfg is not None:  # an mma entry, but this x is misaligned: serve it without the mma kernel
        return configs.heuristic(pw.n, pw.k_tiles, m, _sms(dev), False)
    if (configs.autotune_enabled() and dev.type == "cuda" and not interpreting()
            and not torch.cuda.is_current_stream_capturing()):
        cfg = _autotune(x2, pw, bits, bias)
    else:
        cfg = configs.heuristic(pw.n, pw.k_tiles, m, _sms(dev), mma)
    configs.remember(key, cfg)
    return cfg


def _autotune(x2, pw, bits, bias) -> KernelConfig:
    from triton.testing import do_bench

    m = x2.shape[0]
    out = torch.empty(m, pw.n, dtype=x2.dtype, device=x2.device)
    if pw.layout == "lop3":
        cands = configs.lop3_candidates(pw.n, pw.k // 128, m, _sms(x2.device), bits, lop3_supported(x2, pw))
    else:
        cands = configs.candidates(pw.n, pw.k_tiles, m, _sms(x2.device), mma_supported(x2, pw), bits)
    timed = {}

    def bench(cfgs):
        for cfg in cfgs:
            try:
                timed[cfg] = do_bench(lambda: run_config(cfg, x2, pw, bits, out, bias), warmup=5, rep=20,
                                      return_mode="median")
            except Exception:  # a candidate that does not compile or fit is skipped
                pass
    bench(cands)
    if pw.layout == "lop3":  # then the best few with programmatic dependent launch and / or the L2 prefetch
        bench(configs.lop3_overlap_variants(sorted(timed, key=timed.get)[:configs.LOP3_OVERLAP_TOP],
                                            configs.LOP3_TUNE_L2_PREFETCH))
    best = min(timed, key=timed.get, default=None)
    if pw.layout == "lop3":
        return best or configs.lop3_heuristic(pw.n, pw.k // 128, m, _sms(x2.device), bits, lop3_supported(x2, pw))
    return best or configs.heuristic(pw.n, pw.k_tiles, m, _sms(x2.device), mma_supported(x2, pw))


def quant_matmul(x: torch.Tensor, pw: PackedWeight, bits: int, bias: torch.Tensor | None = None,
                 backend: str = "auto", config: KernelConfig | None = None) -> torch.Tensor:
    """y = x · Ŵ_bᵀ (+ bias), x [..., K] in storage column order; returns x.dtype.

    ``backend``: "auto" (Triton on CUDA when available, else torch), "triton" (also under the
    interpreter), "torch". ``config`` forces a launch configuration.
    """
    if x.shape[-1] != pw.k:
        raise ValueError(f"x has {x.shape[-1]} features but the weight has {pw.k} input columns")
    pw.check_bits(bits)
    use_triton = backend == "triton" or (backend == "auto" and x.is_cuda and triton is not None)
    if backend not in ("auto", "triton", "torch"):
        raise ValueError(f"backend={backend!r}; use 'auto', 'triton' or 'torch'")
    if use_triton and triton is None:
        raise RuntimeError("backend='triton' needs the triton package (pip install triton)")
    lead = x.shape[:-1]
    if not use_triton or not kernel_supported(pw, bits) or x.dtype not in (torch.float16, torch.bfloat16):
        w = dequantize_packed(pw, bits, torch.float32).to(x.dtype)
        return F.linear(x, w, None if bias is None else bias.to(x.dtype))
    x2 = x.reshape(-1, pw.k)
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    out = torch.empty(x2.shape[0], pw.n, dtype=x.dtype, device=x.device)
    if x2.shape[0] == 0:
        return out.view(*lead, pw.n)
    cfg = config or choose_config(x2, pw, bits, bias)
    run_config(cfg, x2, pw, bits, out, bias)
    return out.view(*lead, pw.n)
