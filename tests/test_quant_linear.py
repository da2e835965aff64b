"""QuantLinear against the fake-quantized weight in float64."""

import pytest
import torch
import torch.nn.functional as F

from matgptq.modules import QuantLinear
from matgptq.quant import HessianAccumulator, QuantConfig, quantize_layer


@pytest.fixture(scope="module")
def quantized():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(40, 96, generator=g) * 0.05
    acc = HessianAccumulator(96)
    acc.add(torch.randn(512, 96, generator=g))
    cfg = QuantConfig(method="matgptq", bits=(8, 4, 3), group_size=32, act_order=True)
    return quantize_layer(w, acc, cfg), torch.randn(40, generator=g)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_forward_matches_fake_quantized_reference_at_every_width(quantized, dtype):
    qw, bias = quantized
    ql = QuantLinear.from_quantized(qw, bias=bias, dtype=dtype)
    x = torch.randn(3, 5, 96)
    for b in range(2, 9):
        ql.set_bits(b)
        ref = F.linear(x.double(), qw.dequantize(b).double(), bias.double())
        out = ql(x.to(dtype))
        assert out.dtype == dtype and out.shape == (3, 5, 40)
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        assert (out.double() - ref).norm() / ref.norm() < tol
    ql.bits = 3
    assert torch.equal(ql.dequantized_weight(), qw.dequantize(3).to(dtype))


def test_set_bits_rejects_widths_the_codes_cannot_serve(quantized):
    ql = QuantLinear.from_quantized(quantized[0])
    with pytest.raises(ValueError, match="choose 1..8"):
        ql.set_bits(9)
