"""The experiments' CPU oracles (benchmarks/experiments/): their layouts against float64."""

from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks", "experiments"))
import lop3_layout as lop3  # noqa: E402  (a missing or broken module fails here, not skips)


@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("n,k,m,asym", [(32, 256, 1, True), (48, 384, 3, True), (16, 128, 8, False)])
def test_lop3_layout_fragments_rebuild_the_matmul(bits, n, k, m, asym):
    """Packing, the lop3 field positions, the magic offsets and the mma fragment mapping, lane by
    lane in float64 (lop3_layout.emulate), give x @ W^T exactly."""
    codes, s, z, x = lop3.random_case(n, k, bits, m, seed=n + k + bits, asym=asym)
    ref = lop3.reference(codes, s, z, x)
    got = lop3.emulate(lop3.pack(codes, bits), s, z, x, bits)
    assert ((got - ref).abs().max() / ref.abs().max()).item() < 1e-12


def test_lop3_layout_emulator_sees_a_misplaced_word():
    codes, s, z, x = lop3.random_case(32, 256, 2, 3, seed=1)
    q = lop3.pack(codes, 2)[..., [1, 0, 2, 3]].contiguous()  # rows r and r + 8 of a lane swapped
    ref = lop3.reference(codes, s, z, x)
    assert ((lop3.emulate(q, s, z, x, 2) - ref).abs().max() / ref.abs().max()).item() > 0.1


def test_lop3_layout_pack_is_the_documented_bit_layout():
    """Word r = 2 r1 + r0 of lane 4g + c holds row 2g + r0 at columns 32c + 4j + 2 r1 + h in field j
    of half h (2 bits: bits 16h + 2j)."""
    codes = torch.randint(0, 4, (16, 128), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    q = lop3.pack(codes, 2)[0, 0].to(torch.int64) & 0xFFFFFFFF  # [lanes, words]
    for lane in (0, 5, 31):
        g, c = divmod(lane, 4)
        for r in range(4):
            r1, r0 = divmod(r, 2)
            for j in range(8):
                for h in range(2):
                    want = codes[2 * g + r0, 32 * c + 4 * j + 2 * r1 + h].item()
                    assert (q[lane, r].item() >> (16 * h + 2 * j)) & 3 == want


def _async():
    import lop3_async  # noqa: E402  (needs triton; the kernels themselves need a GPU)

    return lop3_async


def test_lop3_async_chunk_major_keeps_each_lanes_words():
    """4 bits: chunk j of lane L (16 bytes at word 128 j + 4 L of a block) is words 8 L + 4 j .. of
    the lop3 layout, the words the lane's mma registers take."""
    A = _async()
    codes, s, z, _ = lop3.random_case(32, 384, 4, 1, seed=5, asym=False)
    lw = lop3.Lop3Weight(codes, s, z, 4, 8.0)
    old = lw.q.clone().view(-1, 256)
    new = A.chunk_major(lw).q.view(-1, 256)
    assert A.chunk_major(lw).q.data_ptr() == lw.q.data_ptr()  # once only
    for lane in (0, 7, 31):
        for j in (0, 1):
            assert torch.equal(new[:, 128 * j + 4 * lane:128 * j + 4 * lane + 4], old[:, 8 * lane + 4 * j:8 * lane + 4 * j + 4])


@pytest.mark.parametrize("bits,stages,warps,tpw", [(2, 2, 2, 1), (2, 4, 4, 1), (4, 4, 2, 1), (4, 8, 4, 1),
                                                   (2, 4, 4, 2), (4, 4, 2, 2)])
def test_lop3_async_rings_stay_inside_their_regions(bits, stages, warps, tpw):
    """Every address the copy asm writes, for every slot, tile and thread, lies in its own region
    (codes below the scales, scales below the activation block), and the allocation covers them all."""
    import re

    A = _async()
    nt = 32 * warps
    xbytes = 16 * 256 + 16 * 512
    soff, xoff, words = A.regions(bits, stages, nt, xbytes, tpw)
    assert words & (words - 1) == 0 and xoff + xbytes <= 4 * words
    for slot in range(stages):
        text = A._issue_asm(bits, stages, nt, slot, tpw)
        codes = [int(v) for v in re.findall(r"\[\$16\+(\d+)\]", text)]
        scales = [int(v) for v in re.findall(r"\[\$17\+(\d+)\]", text)]
        assert len(codes) == tpw * bits // 2 and len(scales) == tpw
        assert len(re.findall(r"\[\$20\+", text)) == (bits // 2 if tpw == 2 else 0)  # tile 1's codes
        for t in (0, nt - 1):
            assert all(0 <= 16 * t + o and 16 * t + o + 16 <= soff for o in codes)
            assert all(soff <= 4 * t + o and 4 * t + o + 4 <= xoff for o in scales)
    allc = [int(v) for slot in range(stages) for v in re.findall(r"\[\$16\+(\d+)\]", A._issue_asm(bits, stages, nt, slot, tpw))]
    alls = [int(v) for slot in range(stages) for v in re.findall(r"\[\$17\+(\d+)\]", A._issue_asm(bits, stages, nt, slot, tpw))]
    assert len(set(allc)) == len(allc) == stages * tpw * (bits // 2)  # no two slots, tiles or chunks share one
    assert len(set(alls)) == len(alls) == stages * tpw
