"""The solver against the float64 reference, and the properties the method promises."""

import pytest
import torch

from matgptq.quant import HessianAccumulator, QuantConfig, quantize_layer, quantize_layers
from oracles import correlated_inputs, gptq_reference


def _layer(rows, cols, seed, n=2048):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g, dtype=torch.float64) * 0.05
    x = correlated_inputs(n, cols, seed)
    acc = HessianAccumulator(cols, dtype=torch.float64)
    acc.add(x)
    return w, x, acc


REFERENCE_CASES = [
    dict(method="gptq", bits=4, group_size=32),
    dict(method="gptq", bits=3, group_size=None, sym=False),
    dict(method="gptq", bits=8, group_size=64, act_order=True),
    dict(method="gptq", bits=4, group_size=16, sym=False, act_order=True, static_groups=True),
    dict(method="matgptq", bits=(8, 4, 3), group_size=32),
    dict(method="matgptq", bits=(8, 4, 3), group_size=64, slicing="nested", sym=False),
    dict(method="matgptq", bits=(8, 4, 3), group_size=32, act_order=True),
    dict(method="matgptq", bits=(6, 3), lambdas=(1.0, 3.0), group_size=None, act_order=True),
    dict(method="matgptq", bits=(8, 4, 2), group_size=32, act_order=True, static_groups=True,
         compensation="mean", lambdas=(1.0, 2.0, 1.0)),
    dict(method="matgptq", bits=(8, 4, 3), group_size=96, block_size=64),  # groups span blocks
]


@pytest.mark.parametrize("kwargs", REFERENCE_CASES, ids=lambda k: "-".join(f"{v}" for v in k.values()))
def test_codes_equal_float64_reference(kwargs):
    cfg = QuantConfig(scale_dtype="float32", **kwargs)
    w, _, acc = _layer(24, 192, seed=len(str(kwargs)))
    w[:, 5] = 0.3  # a column the Hessian never sees
    acc.hessian[5, :] = 0
    acc.hessian[:, 5] = 0
    qw = quantize_layer(w, acc, cfg, backend="torch")
    ref = gptq_reference(w, acc.hessian, cfg)
    codes = qw.codes.long()
    if cfg.act_order and not cfg.static_groups:
        assert torch.equal(qw.perm, ref["perm"])
    elif cfg.act_order:
        codes = codes[:, ref["perm"]]  # stored in original order; the reference is permuted
        assert qw.perm is None
    assert torch.equal(codes, ref["codes"])
    assert torch.allclose(qw.scales.double(), ref["scales"], rtol=1e-6)
    assert torch.equal(qw.zeros.double(), ref["zeros"])
    assert qw.stats.dead_inputs == 1


def _output_error(w, x, what):
    return float(((w - what.double()) @ x.T).norm() / (w @ x.T).norm())


def test_matgptq_single_width_is_exactly_gptq():
    w, _, acc = _layer(32, 256, seed=1)
    for b in (2, 3, 4, 8):
        a = quantize_layer(w.float(), acc, QuantConfig(method="gptq", bits=b))
        m = quantize_layer(w.float(), acc, QuantConfig(method="matgptq", bits=(b,)))
        assert torch.equal(a.codes, m.codes) and torch.equal(a.scales, m.scales)


def test_gptq_beats_rtn_and_matgptq_beats_rtn_at_low_slices():
    w, x, acc = _layer(128, 512, seed=2, n=8192)
    w, acc32 = w.float(), HessianAccumulator(512)
    acc32.add(x.float())
    mat = quantize_layer(w, acc32, QuantConfig(method="matgptq", bits=(8, 4, 3)))
    sliced = quantize_layer(w, acc32, QuantConfig(method="matgptq", bits=(8,)))
    errors = {}
    for b in (8, 6, 4, 3, 2):
        rtn = quantize_layer(w, None, QuantConfig(method="rtn", bits=b))
        gptq = quantize_layer(w, acc32, QuantConfig(method="gptq", bits=b))
        errors[b] = {
            "rtn": _output_error(w.double(), x, rtn.dequantize(b)),
            "gptq": _output_error(w.double(), x, gptq.dequantize(b)),
            "matgptq": _output_error(w.double(), x, mat.dequantize(b)),
            "gptq8_sliced": _output_error(w.double(), x, sliced.dequantize(b)),
        }
        assert errors[b]["gptq"] < errors[b]["rtn"]
    for b in (4, 3, 2):  # the slices the joint objective trains for, and below
        assert errors[b]["matgptq"] < errors[b]["rtn"], errors
    assert errors[3]["matgptq"] < errors[3]["gptq8_sliced"], errors


def test_layers_sharing_an_input_solve_as_one():
    w, _, acc = _layer(48, 128, seed=3)
    cfg = QuantConfig(method="matgptq", bits=(8, 4, 3), group_size=32, act_order=True)
    parts = [w[:16].float(), w[16:40].float(), w[40:].float()]
    joint = quantize_layers(parts, acc, cfg)
    whole = quantize_layer(w.float(), acc, cfg)
    assert [p.codes.shape[0] for p in joint] == [16, 24, 8]
    assert torch.equal(torch.cat([p.codes for p in joint]), whole.codes)
    assert all(torch.equal(p.perm, whole.perm) for p in joint)


def test_hessian_accumulator_is_token_weighted_for_any_leading_shape():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 50, 16, generator=g, dtype=torch.float64)
    acc = HessianAccumulator(16, dtype=torch.float64)
    acc.add(x[0])
    acc.add(x[1:, :7])
    acc.add(x[1:, 7:].reshape(2, 43, 1, 16))
    flat = torch.cat([x[0], x[1:, :7].reshape(-1, 16), x[1:, 7:].reshape(-1, 16)])
    assert acc.num_tokens == 150
    assert torch.allclose(acc.hessian, 2 * flat.T @ flat / 150)
    with pytest.raises(ValueError, match="does not match"):
        acc.add(torch.zeros(4, 8))


def test_damping_retries_instead_of_crashing(caplog):
    w = torch.randn(8, 64)
    x = torch.randn(16, 64)
    h = 2 * x.T @ x / 16  # rank 16 < 64
    h[3, 3] = -50.0  # not positive definite even after the default damping
    qw = quantize_layer(w, h, QuantConfig(method="gptq", bits=4, group_size=32))
    assert qw.stats.damp_retries > 0 and qw.stats.damp > 0.01
    assert "damp" in caplog.text
    assert torch.isfinite(qw.dequantize(4)).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(bits=9), "outside the supported range 2..8"),
        (dict(bits=(8, 1)), "outside the supported range 2..8"),
        (dict(lambdas=(1.0, 0.0, 1.0)), "must be a finite number > 0"),
        (dict(lambdas=(1.0, 1.0)), "give one λ per bit width"),
        (dict(method="awq"), "unknown method 'awq'"),
        (dict(slicing="floor"), "unknown slicing rule 'floor'"),
        (dict(method="gptq", bits=(8, 4)), "use method='matgptq'"),
        (dict(group_size=0), "group_size=0 must be a positive int"),
        (dict(static_groups=True), "set act_order=True"),
        (dict(master_bits=4), "use master_bits >= 8"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        QuantConfig(**kwargs)


def test_group_size_must_divide_and_shapes_must_agree():
    cfg = QuantConfig(group_size=128)
    with pytest.raises(ValueError, match="does not divide the input width 200"):
        quantize_layer(torch.randn(4, 200), torch.eye(200), cfg)
    with pytest.raises(ValueError, match="only layers that share one input"):
        quantize_layers([torch.randn(4, 128), torch.randn(4, 256)], torch.eye(128), cfg)
    with pytest.raises(ValueError, match="expected \\(128, 128\\)"):
        quantize_layer(torch.randn(4, 128), torch.eye(64), cfg)


def test_config_round_trips_through_dict():
    cfg = QuantConfig(bits=(3, 8, 4), lambdas=(3.0, 8.0, 4.0), act_order=True)
    assert cfg.bits == (8, 4, 3) and cfg.lambdas == (8.0, 4.0, 3.0)  # λ travels with its width
    assert QuantConfig.from_dict(cfg.to_dict()) == cfg
