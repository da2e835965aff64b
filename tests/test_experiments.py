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
