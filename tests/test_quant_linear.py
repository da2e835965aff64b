"""QuantLinear against the fake-quantized weight in float64."""

import pytest
import torch
import torch.nn.functional as F

from matgptq.modules import QuantLinear
from matgptq.quant import HessianAccumulator, QuantConfig, quantize_layer


def _quantize(rows, cols, tokens, cfg, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * 0.05
    acc = HessianAccumulator(cols)
    acc.add(torch.randn(tokens, cols, generator=g))
    return quantize_layer(w, acc, cfg), g


@pytest.fixture(scope="module")
def quantized():
    qw, g = _quantize(40, 96, 512, QuantConfig(method="matgptq", bits=(8, 4, 3), group_size=32, act_order=True), 0)
    return qw, torch.randn(40, generator=g)


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


# -- layouts, the kernel path and the plain-torch cache ---------------------------------------

import importlib.util  # noqa: E402
import os  # noqa: E402

from matgptq.modules import quant_linear as ql_mod  # noqa: E402

HAS_TRITON = importlib.util.find_spec("triton") is not None


@pytest.fixture(scope="module")
def plain():
    """Symmetric, no act_order, group 32: the kernels' fast path."""
    return _quantize(48, 1024, 256, QuantConfig(method="rtn", bits=(8, 4, 3), group_size=32, slicing="nested"), 1)[0]


@pytest.mark.parametrize("layout", ["resident", "fixed"])
def test_both_layouts_match_the_fake_quantized_reference(quantized, layout):
    qw, bias = quantized
    x = torch.randn(7, 96, generator=torch.Generator().manual_seed(3))
    for b in (8, 6, 3, 2):
        ql = QuantLinear.from_quantized(qw, bias=bias, bits=b, layout=layout, dtype=torch.float32)
        ref = F.linear(x.double(), qw.dequantize(b).double(), bias.double())
        assert (ql(x).double() - ref).norm() / ref.norm() < 1e-5
        assert torch.equal(ql.dequantized_weight(), qw.dequantize(b))


def test_fixed_layout_refuses_other_widths_and_stores_b_bits(quantized):
    qw, _ = quantized
    ql = QuantLinear.from_quantized(qw, bits=3, layout="fixed")
    assert ql.qweight.numel() * 32 == 3 * 40 * 512  # 3 bits per weight (K padded to one k-tile)
    with pytest.raises(ValueError, match="layout='resident'"):
        ql.set_bits(4)


def test_resident_switch_is_in_place_and_cpu_path_caches_once_per_width(quantized, monkeypatch):
    qw, bias = quantized
    ql = QuantLinear.from_quantized(qw, bias=bias, dtype=torch.float32)
    buffers = {n: b.data_ptr() for n, b in ql.named_buffers()}
    calls = []
    real = ql_mod.dequantize_packed
    monkeypatch.setattr(ql_mod, "dequantize_packed", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    x = torch.randn(2, 96)
    for b in (4, 4, 2, 4, 2, 8):
        ql.bits = b
        ql(x)
    assert calls == [4, 2, 8]  # one dequantization per width, then the cache
    assert {n: b.data_ptr() for n, b in ql.named_buffers()} == buffers  # no copy, no repacking
    assert torch.equal(ql.quantized_weight().codes, qw.codes)


def test_to_moves_buffers_and_drops_the_cache(quantized):
    qw, _ = quantized
    ql = QuantLinear.from_quantized(qw, dtype=torch.float32)
    ql(torch.randn(1, 96))
    assert ql._cache
    ql.to(torch.float32)  # any .to() clears the cache; buffers keep their integer dtypes
    assert not ql._cache and ql.qweight.dtype == torch.int32


@pytest.mark.skipif(not HAS_TRITON, reason="needs triton")
@pytest.mark.parametrize("layout", ["resident", "fixed"])
def test_kernel_path_matches_the_fake_quantized_reference(plain, layout, monkeypatch):
    """The Triton path (interpreter on CPU) through the module: fp16 and bf16 inputs of any
    leading shape, bias, output in the input dtype."""
    if os.environ.get("TRITON_INTERPRET") != "1" and not torch.cuda.is_available():
        pytest.skip("needs CUDA or TRITON_INTERPRET=1")
    monkeypatch.setattr(ql_mod, "KERNELS", "triton")
    bias = torch.randn(48, generator=torch.Generator().manual_seed(4))
    ql = QuantLinear.from_quantized(plain, bias=bias, bits=3, layout=layout)
    for dtype, tol in ((torch.float16, 1e-3), (torch.bfloat16, 8e-3)):
        x = torch.randn(2, 3, 1024, generator=torch.Generator().manual_seed(5)).to(dtype)
        out = ql(x)
        assert out.dtype == dtype and out.shape == (2, 3, 48)
        ref = F.linear(x.double(), plain.dequantize(3).double(), bias.double())
        assert (out.double() - ref).norm() / ref.norm() < tol
