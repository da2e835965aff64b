"""Launch configurations: a measured table per GPU, shape, width and batch, with a heuristic
for anything the table does not hold, and an optional in-process autotuner
(``MATGPTQ_AUTOTUNE=1``) that times the candidates once per key and keeps the fastest.

Batches are bucketed (1, 2, 3-4, 5-8, 9-16, 17-32, 33-64, 65-128, 129-256, larger): one entry
serves every batch of its bucket, so an odd batch (3, 5, 33) runs the tuned kernel of its bucket.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

TUNED_FILE = Path(__file__).with_name("tuned.json")
GEMV_MAX_M = 2  # heuristic: CUDA-core kernel up to this batch, tensor cores above (H100 measurements)
GEMV_TRY_M = 8  # the autotuner still tries the CUDA-core kernel up to this batch
MMA_MAX_M = 16  # the warp-level mma kernel: batch rows are the eight columns of one or two m16n8k16
DOT_MAX_M = 256  # heuristic: fused tensor-core kernel up to this batch, dequantize + cuBLAS above
KINDS = ("mma", "gemv", "gemm", "cublas", "lop3")
LOP3_MAX_M = 32  # the lop3 layout's Gluon kernel: up to 16 rows a launch, two launches up to 32
LOP3_OVERLAP_TOP = 4  # the autotuner times this many best lop3 launches again with PDL and / or the L2 prefetch
# whether the autotuner's round tries the L2 prefetch: not yet run on a GPU (benchmarks/lop3.py times and checks it)
LOP3_TUNE_L2_PREFETCH = False
LOP3_SHARED = 96 * 1024  # shared bytes a lop3 program may take (rings + its activations)


@dataclass(frozen=True)
class KernelConfig:
    kind: str  # "mma" | "gemv" | "gemm" | "cublas" (dequantize, then torch.matmul) | "lop3"; mma: bn = 16 * tiles
    bn: int = 64
    bm: int = 16
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 1
    k_unroll: int = 1  # mma: k-tiles per program, one per group of num_warps / k_unroll warps (more warps per row tile);
    # lop3: warps per row tile, each on a part of the program's K range (summed in shared memory)
    max_regs: int = 0  # registers per thread the compiler may use (0: its choice); fewer -> more warps per SM
    units_outer: int = 0  # mma: 1 runs a k-tile's units in the outer loop, its byte lanes inside (fewer registers)
    pdl: int = 0  # lop3: programmatic dependent launch, the next launch let start 1 at the start, 2 after the loop
    l2_prefetch: int = 0  # lop3: 1 prefetches each warp's weights past its ring's first groups into L2 at the start

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r}; use one of {', '.join(KINDS)}")
        if self.k_unroll not in (1, 2, 4, 8):
            raise ValueError(f"k_unroll={self.k_unroll}; use 1, 2, 4 or 8 (the mma kernel: k-tiles per program; "
                             "lop3: warps per row tile)")
        if self.k_unroll > 1 and self.kind not in ("mma", "lop3"):
            raise ValueError(f"k_unroll={self.k_unroll} with kind={self.kind!r}: only the 'mma' and 'lop3' kernels "
                             "split a program's K range over its warps; use k_unroll=1 or kind='mma' / 'lop3'")
        if self.kind == "lop3" and self.num_warps % self.k_unroll:
            raise ValueError(f"k_unroll={self.k_unroll} with num_warps={self.num_warps}, kind='lop3': each row tile "
                             "takes k_unroll warps; use a k_unroll that divides num_warps")
        if self.units_outer not in (0, 1) or (self.units_outer and self.kind != "mma"):
            raise ValueError(f"units_outer={self.units_outer} with kind={self.kind!r}: it orders the mma kernel's "
                             "k-tile steps; use 0, or 1 with kind='mma'")
        if self.kind == "mma" and self.num_stages not in (1, 2, 3):
            raise ValueError(f"num_stages={self.num_stages} with kind='mma': use 1 (no buffering), 2 or 3 (the codes "
                             "of the next one or two k-tile steps loaded ahead, in registers)")
        if self.kind == "lop3" and (self.num_stages not in (2, 3, 4, 6, 8) or self.num_warps not in (1, 2, 4, 8)
                                    or self.bm not in (8, 16)):
            raise ValueError(f"num_stages={self.num_stages}, num_warps={self.num_warps}, bm={self.bm} with "
                             "kind='lop3': use 2, 3, 4, 6 or 8 stages (groups in flight + 1), 1, 2, 4 or 8 warps "
                             "(row tiles per program) and bm 16 or 8 (batch rows per launch)")
        if self.pdl not in (0, 1, 2) or (self.pdl and self.kind != "lop3"):
            raise ValueError(f"pdl={self.pdl} with kind={self.kind!r}: programmatic dependent launch is the 'lop3' "
                             "kernel's; use 0, or 1 (the next launch may start once all programs have started) or 2 "
                             "(once all have finished their group loop) with kind='lop3'")
        if self.l2_prefetch not in (0, 1) or (self.l2_prefetch and self.kind != "lop3"):
            raise ValueError(f"l2_prefetch={self.l2_prefetch} with kind={self.kind!r}: the L2 prefetch is the 'lop3' "
                             "kernel's; use 0, or 1 (each warp's weights past its ring's first groups prefetched into "
                             "L2 when the program starts) with kind='lop3'")
        if self.max_regs and not (self.max_regs % 8 == 0 and 32 <= self.max_regs <= 255):
            raise ValueError(f"max_regs={self.max_regs}; use 0 (the compiler's choice) or a multiple of 8 in 32..255")

    def key(self) -> str:
        ku = f":ku{self.k_unroll}" if self.k_unroll > 1 else ""
        ku += f":r{self.max_regs}" if self.max_regs else ""
        ku += f":u{self.units_outer}" if self.units_outer else ""
        ku += f":p{self.pdl}" if self.pdl else ""
        ku += f":pf{self.l2_prefetch}" if self.l2_prefetch else ""
        return f"{self.kind}:bm{self.bm}:bn{self.bn}:sk{self.split_k}:w{self.num_warps}:s{self.num_stages}{ku}"

    @classmethod
    def from_key(cls, key: str) -> "KernelConfig":
        """The inverse of :meth:`key` ("mma:bm8:bn64:sk4:w8:s1:ku2:r128", or just "cublas")."""
        kind, *parts = key.split(":")
        names = {"bm": "bm", "bn": "bn", "sk": "split_k", "w": "num_warps", "s": "num_stages", "ku": "k_unroll",
                 "r": "max_regs", "u": "units_outer", "p": "pdl", "pf": "l2_prefetch"}
        fields = {}
        for p in parts:
            name = p.rstrip("0123456789")
            if name not in names or name == p:
                raise ValueError(f"unknown part {p!r} in the kernel config key {key!r}; parts are "
                                 f"{', '.join(n + '<int>' for n in names)}")
            fields[names[name]] = int(p[len(name):])
        return cls(kind, **fields)


def m_bucket(m: int) -> int:
    for b in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        if m <= b:
            return b
    return 1 << 30


def next_pow2(m: int) -> int:
    return 1 << max(0, (m - 1).bit_length())


@functools.lru_cache(maxsize=1)
def _table() -> dict:
    if TUNED_FILE.exists():
        return json.loads(TUNED_FILE.read_text())
    return {}


def table_key(device_name: str, n: int, k: int, m: int, fmt: str) -> str:
    return f"{device_name}|{n}x{k}|m{m_bucket(m)}|{fmt}"


def lookup(device_name: str, n: int, k: int, m: int, fmt: str) -> KernelConfig | None:
    entry = _table().get(table_key(device_name, n, k, m, fmt))
    return None if entry is None else KernelConfig(**entry)


def _split(base_programs: int, k_tiles: int, sms: int, target: float) -> int:
    want = max(1, round(target * sms / max(1, base_programs)))
    return max(1, min(want, k_tiles, 32))


def heuristic(n: int, k_tiles: int, m: int, sms: int, mma: bool = False) -> KernelConfig:
    """``mma``: the warp-level mma kernel can serve this call (fp16, batch <= 16)."""
    if mma and m <= MMA_MAX_M:
        return KernelConfig("mma", bn=64, bm=8, split_k=_split(-(-n // 64), k_tiles, sms, 4), num_warps=4)
    if m <= GEMV_MAX_M:
        bn = 64 if n >= 2048 else 32
        return KernelConfig("gemv", bn=bn, bm=next_pow2(m), split_k=_split(-(-n // bn), k_tiles, sms, 4), num_warps=4)
    return gemm_heuristic(n, k_tiles, m, sms)


def candidates(n: int, k_tiles: int, m: int, sms: int, mma: bool = False, bits: int = 8) -> list[KernelConfig]:
    """What the autotuner tries (kept small: every distinct tile shape is a compile; more rows
    per thread spill registers on sm90). ``num_stages=3``: the codes of later k-tiles are copied
    into shared memory asynchronously (Triton's pipeliner) while the current one is decoded.
    ``mma``: also the warp-level mma kernel (fp16, batch <= 16), one to four row tiles per warp
    (the row tiles of one warp share its activation loads and the A = 1 mma: fewer instructions
    per weight, more registers); its ``num_stages=2`` double-buffers the codes in registers (the
    next k-tile's loads first), ``num_stages=3`` triple-buffers them (the next two k-tiles' loads
    in flight), tried at ``bits`` <= 4, where a k-tile's codes take at most 16 registers per row set."""
    out = []
    if mma and m <= MMA_MAX_M:
        # (bn, warps, k_unroll, split targets, stages, register cap). The rows capped at 128
        # registers run 16 warps per SM (two programs of 8 warps, four of 4) where the compiler's
        # choice (130-170) leaves room for fewer, at the price of a few spills.
        for bn, w, ku, targets, stages, regs in ((64, 4, 1, (2, 4, 8), (1, 2), 0), (64, 8, 2, (1, 2, 4), (1, 2), 0),
                                                 (64, 16, 4, (1, 2), (1,), 0), (16, 1, 1, (4, 8), (1, 2), 0),
                                                 (16, 2, 2, (2, 4), (1, 2), 0), (32, 1, 1, (4, 8), (1,), 0),
                                                 (64, 2, 1, (2, 4), (1,), 0), (64, 1, 1, (4, 8), (1,), 0),
                                                 (64, 4, 1, (2, 4), (1, 2), 128), (64, 8, 2, (1, 2), (1, 2), 128),
                                                 (16, 1, 1, (4, 8), (2,), 128)):
            if bits <= 4 and 2 in stages:
                stages = stages + (3,)
            for t in targets:
                for st in stages:
                    out.append(KernelConfig("mma", bn=bn, bm=8, split_k=_split(-(-n // bn), k_tiles, sms, t),
                                            num_warps=w, num_stages=st, k_unroll=ku, max_regs=regs))
    if m <= GEMV_TRY_M:
        bm = next_pow2(m)
        for bn, w, targets in ((64, 4, (2, 4, 8)), (64, 2, (4,))):
            for t in targets:
                for st in (1, 3):
                    out.append(KernelConfig("gemv", bn=bn, bm=bm, split_k=_split(-(-n // bn), k_tiles, sms, t),
                                            num_warps=w, num_stages=st))
    return list(dict.fromkeys(out + gemm_candidates(n, k_tiles, m, sms)))


def _gemm_bm(m: int) -> int:
    return 16 if m <= 16 else 32 if m <= 32 else 64


def gemm_candidates(n: int, k_steps: int, m: int, sms: int) -> list[KernelConfig]:
    """The tensor-core kernel's launches (either layout; ``k_steps``: what split-K divides, k-tiles
    or lop3 groups), and dequantize + cuBLAS from batch 32."""
    out, bm = [], _gemm_bm(m)
    for bn, w, targets, stages in ((64, 4, (1, 2, 4), (1, 3)), (64, 8, (1, 2), (1, 3)), (32, 4, (2,), (1,)),
                                   (128, 4, (2,), (1,))):
        base = -(-n // bn) * -(-m // bm)
        for t in targets:
            for st in stages:
                out.append(KernelConfig("gemm", bn=bn, bm=bm, split_k=_split(base, k_steps, sms, t), num_warps=w,
                                        num_stages=st))
    if m >= 32:
        out.append(KernelConfig("cublas"))
    return out


def gemm_heuristic(n: int, k_steps: int, m: int, sms: int) -> KernelConfig:
    if m > DOT_MAX_M:
        return KernelConfig("cublas")
    bm, bn = _gemm_bm(m), 64
    return KernelConfig("gemm", bn=bn, bm=bm, split_k=_split(-(-n // bn) * -(-m // bm), k_steps, sms, 2), num_warps=4)


def _lop3_split_ok(n: int, groups: int, m: int, bits: int, warps: int, stages: int, split: int,
                   k_parts: int = 1) -> bool:
    """The launch fits: whole row tiles, and the rings plus the activations of ``m`` rows (one
    launch's) in LOP3_SHARED."""
    from .lop3_kernel import shared_bytes

    return (n % (16 * warps // k_parts) == 0
            and shared_bytes(bits, warps, stages, -(-groups // split), m, k_parts) <= LOP3_SHARED)


def _lop3_splits(groups: int) -> list[int]:
    """Splits of the K axis that leave no program idle: the divisors of the group count up to 32."""
    return [d for d in range(1, min(groups, 32) + 1) if groups % d == 0]


def lop3_heuristic(n: int, groups: int, m: int, sms: int, bits: int, kernel: bool = True) -> KernelConfig:
    """The lop3 layout's launch where no table entry or tuner says otherwise: with ``kernel`` (its
    Gluon kernel serves this call) up to LOP3_MAX_M rows, the lop3 kernel (H200 measurements: 2
    warps up to 8192 rows, else 4; 4 stages; about eight programs per SM; launches of 16 rows
    where their activations fit, else of 8); else the tensor-core kernel up to DOT_MAX_M rows,
    then dequantize + cuBLAS."""
    if not kernel or m > LOP3_MAX_M:
        return gemm_heuristic(n, groups, m, sms)
    warps = next(w for w in ((2, 4, 1) if n <= 8192 else (4, 2, 1)) if n % (16 * w) == 0)
    target = 8 * sms
    for bm in (16, 8):  # launches of 16 rows, else of 8 (less shared memory a program)
        top = 32 * sms if bm == 16 and m > 8 else 1 << 30
        ok = [d for d in _lop3_splits(groups) if _lop3_split_ok(n, groups, min(m, bm), bits, warps, 4, d)
              and n // (16 * warps) * d <= top]
        if ok or bm == 8:
            split = min(ok or [groups], key=lambda d: abs(n // (16 * warps) * d - target))
            return KernelConfig("lop3", bm=bm, bn=16 * warps, split_k=split, num_warps=warps, num_stages=4)


def lop3_candidates(n: int, groups: int, m: int, sms: int, bits: int, kernel: bool = True) -> list[KernelConfig]:
    """What the autotuner tries on the lop3 layout. With ``kernel``, up to LOP3_MAX_M rows, the lop3
    kernel: 1, 2 or 4 warps, 4 stages and at 2 bits also 6 and 8 (a group is only 512 bytes a warp
    there: on the H200 they were 0-7 % faster on 16384², 2-18 % slower on the smaller shapes, which the
    tuner then leaves), the splits that put 3-16 programs on each SM
    (up to 32 for launches of 16 rows, whose activations need shorter K ranges); up to 8 rows also
    launches whose row tiles take 2, 4 or 8 warps each (``k_unroll``: parts of the K range summed
    in shared memory) at splits up to 4, 6-48 warps per SM; from 9 rows also
    launches of 8 rows (bm=8: 16 rows of activations may not fit the long K ranges of few-split
    launches). From 17 rows (two launches) also the tensor-core kernel and dequantize + cuBLAS
    (:func:`gemm_candidates`)."""
    out = []
    if kernel and m <= LOP3_MAX_M:
        for bm in (16, 8) if m > 8 else (16,):
            top = 32 if bm == 16 and m > 8 else 16  # 16 rows: shorter K ranges, for their activations
            for w in (1, 2, 4):
                for st in (4, 6, 8) if bits == 2 else (4,):
                    for d in _lop3_splits(groups):
                        progs = n // (16 * w) * d
                        if 3 * sms <= progs <= top * sms and _lop3_split_ok(n, groups, min(m, bm), bits, w, st, d):
                            out.append(KernelConfig("lop3", bm=bm, bn=16 * w, split_k=d, num_warps=w, num_stages=st))
        if m <= 8:  # k parts: 2-8 warps a row tile summed in shared memory, with little or no split-K
            for ku in (2, 4, 8):
                for tw in (1, 2):
                    for st in (4, 8) if bits == 2 else (4,):
                        for d in (x for x in _lop3_splits(groups) if x <= 4):
                            warps = n // 16 * d * ku
                            if (n // (16 * tw) * d >= sms and 6 * sms <= warps <= 48 * sms and ku * tw <= 8
                                    and _lop3_split_ok(n, groups, m, bits, ku * tw, st, d, ku)):
                                out.append(KernelConfig("lop3", bm=16, bn=16 * tw, split_k=d, num_warps=ku * tw,
                                                        num_stages=st, k_unroll=ku))
    if m > 16 or not kernel:  # at 9-16 rows it never came close on the H200 (benchmarks/lop3.py)
        out += gemm_candidates(n, groups, m, sms)
    return list(dict.fromkeys(out)) or [lop3_heuristic(n, groups, m, sms, bits, kernel)]


def lop3_overlap_variants(best: list[KernelConfig], l2_prefetch: bool = True) -> list[KernelConfig]:
    """The autotuner's second round on the lop3 layout: its best lop3-kernel launches again with
    what overlaps a launch's loads with the launch before, each alone and together: programmatic
    dependent launch 1 and 2 (H100, batch 1, 4096x14336 at 2-4 bits: 0.93-0.99x the time with 2,
    0.94-1.13x with 1; an earlier form 0.91-1.22x launch by launch) and the L2 prefetch. Tuned per
    point, since neither helps everywhere. Without ``l2_prefetch``, PDL alone."""
    return [replace(c, pdl=p, l2_prefetch=f) for c in best if c.kind == "lop3" and not (c.pdl or c.l2_prefetch)
            for f in ((0, 1) if l2_prefetch else (0,)) for p in (0, 1, 2) if p or f]


_tuned: dict[str, KernelConfig] = {}


def autotune_enabled() -> bool:
    return os.environ.get("MATGPTQ_AUTOTUNE", "0") == "1"


def remember(key: str, cfg: KernelConfig) -> None:
    _tuned[key] = cfg


def recalled(key: str) -> KernelConfig | None:
    return _tuned.get(key)


def dump_tuned() -> dict:
    """The autotuner's choices so far, in the format of ``tuned.json``."""
    return {k: asdict(v) for k, v in _tuned.items()}
