"""The mma kernel's PTX works on the lanes that hold the elements, so Triton must give lane l of
every warp elements 4l..4l+3 of each [rows, 128] operand (a row: one row tile of one k-tile,
whole rows per warp), with no layout conversion inside the
k-loop, and the double-buffered loads of the next k-tiles must stay ahead of the current tile's
mma. Compiled offline for sm_90 (Triton's bundled ptxas, no GPU) in a fresh process: the
kernels of this test session are interpreted."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = r"""
import importlib.util, json, re, sys
spec = importlib.util.spec_from_file_location("ks", sys.argv[1])
ks = importlib.util.module_from_spec(spec); spec.loader.exec_module(ks)
out = []
for layout, bits, bn, warps, stages, ku, bm, uo in (
        ("fixed", 2, 64, 4, 1, 1, 1, 0), ("resident", 8, 16, 1, 2, 1, 1, 0), ("fixed", 3, 16, 1, 1, 1, 1, 0),
        ("fixed", 4, 64, 8, 1, 2, 1, 0), ("fixed", 2, 64, 4, 1, 1, 16, 0), ("resident", 4, 64, 8, 2, 2, 16, 0),
        ("fixed", 2, 16, 1, 2, 1, 1, 0), ("fixed", 2, 16, 1, 2, 1, 1, 1), ("resident", 4, 64, 8, 2, 2, 16, 1)):
    k = ks.compile_sm90("mma", layout, bits, bm, bn, warps, stages, ku, units_outer=uo)
    ttgir = k.asm["ttgir"]
    layouts = dict(re.findall(r"^(#blocked\d*) = #ttg\.blocked<(.*)>$", ttgir, re.M))
    asm = [layouts[m] for m in re.findall(r"tt\.elementwise_inline_asm.*?-> tensor<\d+x128x[fi](?:32|64), (#blocked\d*)>", ttgir)]
    start = ttgir.index("scf.for")  # the k-loop (no loop nests inside it)
    loop = ttgir[start:ttgir.index("scf.yield", start)]
    out.append(dict(case=[layout, bits, bn, warps, stages, ku, bm, uo], asm_layouts=sorted(set(asm)), n_asm=len(asm),
                    converts_in_loop=loop.count("ttg.convert_layout"), regs=ks.loop_mix(k)[0]))
pinned = []
for bits, bn, warps, ku in ((2, 64, 8, 2), (4, 64, 4, 1), (8, 16, 1, 1)):  # num_stages=2: next k-tiles first
    body = ks.loop_sass(ks.compile_sm90("mma", "fixed", bits, 1, bn, warps, 2, ku))[1]
    codes = [i for i, t in enumerate(body) if "LDG" in t and ".128" in t]  # 16-byte code loads
    pinned.append(dict(case=[bits, bn, warps, ku], codes=codes, first_mma=min(i for i, t in enumerate(body) if "HMMA" in t)))
print(json.dumps(dict(layouts=out, pinned=pinned)))
"""


def test_mma_operands_sit_in_their_lanes():
    env = dict(os.environ, TRITON_INTERPRET="0", PYTHONPATH=str(ROOT / "src"))
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT / "benchmarks" / "kernel_sass.py")],
                         capture_output=True, text=True, env=env, timeout=600)
    if res.returncode != 0 and "ptxas" in res.stderr and "not found" in res.stderr:
        pytest.skip("this Triton has no bundled ptxas")
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    for case in got["layouts"]:
        assert case["n_asm"] > 0, case
        assert len(case["asm_layouts"]) == 1, case
        lay = case["asm_layouts"][0]
        assert "sizePerThread = [1, 4]" in lay and "threadsPerWarp = [1, 32]" in lay, case
        assert f"warpsPerCTA = [{case['case'][3]}, 1]" in lay, case  # a warp owns whole operand rows
        assert case["converts_in_loop"] == 0, case
        assert case["regs"] <= 255, case
    # units outer: a unit's decoded words die after its four byte lanes, so the same launch needs
    # fewer registers (2 bits, bn16, one warp, num_stages=2: 172 -> 130 with Triton 3.6)
    regs = {tuple(c["case"]): c["regs"] for c in got["layouts"]}
    assert regs[("fixed", 2, 16, 1, 2, 1, 1, 1)] < regs[("fixed", 2, 16, 1, 2, 1, 1, 0)] - 16, regs
    # double-buffering: the warp barrier after the next k-tiles' loads keeps them ahead of this
    # tile's first mma (without it the compiler sinks them to the end of the loop body)
    for case in got["pinned"]:
        assert case["codes"] and max(case["codes"]) < case["first_mma"], case
