"""quantize -> save -> load -> every precision reproduces the fake-quantized outputs exactly."""

import copy
import json

import pytest
import torch

from _tiny_models import tiny_model
from matgptq.api import load, quantize_model
from matgptq.checkpoint import open_checkpoint
from matgptq.checkpoint.atomic import write_json, write_safetensors
from matgptq.modules import QuantLinear
from matgptq.quant import QuantConfig

IDS = torch.randint(0, 320, (4, 24), generator=torch.Generator().manual_seed(1))
X = torch.randint(0, 320, (2, 20), generator=torch.Generator().manual_seed(2))


def _fake(model, layers, bits):
    m = copy.deepcopy(model)
    for name, qw in layers.items():
        b = bits[name] if isinstance(bits, dict) else bits
        m.get_submodule(name).weight.data = qw.dequantize(b).to(torch.float32)
    return m.eval()


@pytest.mark.parametrize("family,config", [
    ("llama", QuantConfig(bits=(8, 4, 3), group_size=32)),
    ("llama", QuantConfig(bits=(8, 4, 3), group_size=None, sym=False, slicing="nested", act_order=True)),
    ("qwen2", QuantConfig(bits=(6, 3), group_size=16, act_order=True, static_groups=True)),
])
def test_every_precision_matches_fake_quant(tmp_path, family, config):
    original = tiny_model(family, layers=2)
    r = quantize_model(copy.deepcopy(original), tmp_path / "ck", config, calibration=IDS, progress=False)
    model = load(r.path, bits=config.master_bits)
    qlin = [n for n, m in model.named_modules() if isinstance(m, QuantLinear)]
    assert sorted(qlin) == sorted(r.layers) == r.meta.modules
    for b in range(2, config.master_bits + 1):
        model.set_bits(b)
        assert all(m.bits == b for m in model.modules() if isinstance(m, QuantLinear))
        with torch.no_grad():
            got = model(X).logits
            want = _fake(original, r.layers, b)(X).logits
        assert torch.equal(got, want), f"bits={b}: max diff {(got - want).abs().max()}"


def test_default_bits_and_per_layer_map(tmp_path):
    original = tiny_model("llama", layers=2)
    layer = "model.layers.1.mlp.down_proj"
    r = quantize_model(copy.deepcopy(original), tmp_path / "ck", QuantConfig(bits=(8, 4, 3), group_size=32),
                       calibration=IDS, layer_bits={layer: 8}, progress=False)
    model = load(r.path)  # default 4, except the stored per-layer map
    assert model.get_submodule(layer).bits == 8 and model.get_submodule("model.layers.0.mlp.up_proj").bits == 4
    bits = {n: (2 if "self_attn" in n else 6) for n in r.layers}
    model = load(r.path, bits=bits)
    with torch.no_grad():
        assert torch.equal(model(X).logits, _fake(original, r.layers, bits)(X).logits)
    with pytest.raises(ValueError, match="outside 2..8"):
        model.set_bits(9)
    with pytest.raises(ValueError, match="not quantized"):
        load(r.path, bits={"model.nope": 4})


def test_reads_published_format(tmp_path):
    """METHOD §7: X.qweight (uint8) + X.scales, symmetric z=128, round slicing, no zeros/perm."""
    original = tiny_model("llama", layers=2)
    r = quantize_model(copy.deepcopy(original), tmp_path / "ours", QuantConfig(bits=(8, 4, 3), group_size=32),
                       calibration=IDS, progress=False)
    qws, rest = open_checkpoint(r.path).read()
    pub = tmp_path / "published"
    pub.mkdir()
    tensors = dict(rest)
    for name, qw in qws.items():
        tensors[f"{name}.qweight"] = qw.codes
        tensors[f"{name}.scales"] = qw.scales
    write_safetensors(pub / "model.safetensors", tensors)
    cfg = json.loads((r.path / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "matgptq_quant", "master_bitwidth": 8, "inference_bitwidth": 3,
                                  "group_size": 32, "quant_dtype": "float16",
                                  "modules_to_not_convert": ["lm_head", "norm"]}
    write_json(pub / "config.json", cfg)
    model = load(pub)
    assert all(m.bits == 3 for m in model.modules() if isinstance(m, QuantLinear))
    for b in (8, 4, 3, 2):
        model.set_bits(b)
        with torch.no_grad():
            assert torch.equal(model(X).logits, _fake(original, r.layers, b)(X).logits)


def test_lop3_with_bf16_loads_fixed_and_says_so(tmp_path, caplog):
    """The lop3 layout's fast kernel takes fp16: on a model whose every layer fits the layout, a
    float32 load gets lop3 layers, a bf16 load gets the fixed layout and a warning, with the
    outputs of a fixed-layout bf16 load."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = AutoConfig.for_model("llama", vocab_size=320, hidden_size=128, intermediate_size=256, num_hidden_layers=1,
                               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    original = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    r = quantize_model(copy.deepcopy(original), tmp_path / "ck", QuantConfig(bits=(8, 4, 3), group_size=128),
                       calibration=IDS, progress=False)

    def layouts(model):
        return {m.layout for m in model.modules() if isinstance(m, QuantLinear)}

    assert layouts(load(r.path, bits=3, layout="lop3", dtype=torch.float32)) == {"lop3"}
    with caplog.at_level("WARNING", logger="matgptq"):
        model = load(r.path, bits=3, layout="lop3", dtype=torch.bfloat16)
    assert "dtype=torch.float16 for lop3" in caplog.text
    assert layouts(model) == {"fixed"}
    fixed = load(r.path, bits=3, layout="fixed", dtype=torch.bfloat16)
    with torch.no_grad():
        assert torch.equal(model(X).logits, fixed(X).logits)
