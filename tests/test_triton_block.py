"""The fused Triton block kernel against the torch loop (CPU, TRITON_INTERPRET=1)."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch

pytest.importorskip("triton")

from matgptq.quant import HessianAccumulator, QuantConfig, quantize_layer  # noqa: E402
from matgptq.quant import gptq  # noqa: E402
from matgptq.quant.triton_block import block_triton  # noqa: E402
from oracles import correlated_inputs  # noqa: E402


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(method="gptq", bits=4, group_size=32),
        dict(method="matgptq", bits=(8, 4, 3), group_size=32, act_order=True),
        dict(method="matgptq", bits=(6, 3), group_size=None, slicing="nested", sym=False),
    ],
)
def test_triton_block_matches_torch_block(kwargs, monkeypatch):
    rows, cols = 37, 96  # rows not a multiple of the kernel's row tile
    g = torch.Generator().manual_seed(7)
    w = torch.randn(rows, cols, generator=g) * 0.05
    acc = HessianAccumulator(cols)
    acc.add(correlated_inputs(1024, cols, 7).float())
    cfg = QuantConfig(block_size=32, **kwargs)
    ref = quantize_layer(w, acc, cfg, backend="torch")

    # run the same solve with the kernel doing every block (the interpreter takes CPU tensors)
    monkeypatch.setattr(gptq, "_block_backend", lambda backend, device: block_triton)
    out = quantize_layer(w, acc, cfg, backend="torch")
    mismatch = (out.codes != ref.codes).float().mean().item()
    assert mismatch == 0.0, f"{mismatch:.2%} of codes differ"
    assert torch.equal(out.scales, ref.scales)
    assert out.stats.loss == pytest.approx(ref.stats.loss, rel=1e-4)
