"""Traversal, capture of block inputs, Hessian grouping and the sequential pipeline."""

import pytest
import torch
from torch import nn

from _tiny_models import tiny_model
from matgptq.checkpoint import open_checkpoint
from matgptq.models.capture import capture_inputs
from matgptq.models.hessian import HessianHooks
from matgptq.models.traverse import UnsupportedModelError, find_blocks, find_linears
from matgptq.quant import HessianAccumulator, QuantConfig


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3"])
def test_find_blocks_and_linears(family):
    m = tiny_model(family, layers=2)
    name, blocks = find_blocks(m)
    assert name == "model.layers" and len(blocks) == 2
    lin = find_linears(blocks[0])
    assert set(lin) == {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}
    assert set(find_linears(blocks[0], skip=("mlp.*",))) == {n for n in lin if n.startswith("self_attn")}


def test_unsupported_architecture_fails_clearly():
    with pytest.raises(UnsupportedModelError, match="cannot find the decoder blocks"):
        find_blocks(nn.Sequential(nn.Embedding(10, 4), nn.ReLU()))


def test_capture_records_per_block_arguments():
    m = tiny_model("gemma3", layers=2)  # block 0 sliding-window, block 1 global attention
    _, blocks = find_blocks(m)
    ids = torch.randint(0, 320, (3, 16), generator=torch.Generator().manual_seed(0))
    ci = capture_inputs(m, blocks, ids)
    assert ci.hidden.shape == (3, 16, 64)
    with torch.no_grad():
        torch.testing.assert_close(ci.hidden, m.model.embed_tokens(ids))  # Gemma scales inside
    m0, m1 = ci.kwargs[0]["attention_mask"], ci.kwargs[1]["attention_mask"]
    # sliding-window vs full mask (SDPA may leave a padding-free causal mask as None)
    assert m0 is not None and (m1 is None or not torch.equal(m0, m1))
    assert list(blocks) and all(type(b).__name__.endswith("DecoderLayer") for b in blocks)  # restored
    # the captured arguments reproduce the model's own forward
    with torch.no_grad():
        h = ci.hidden[:1]
        for k, b in enumerate(blocks):
            h = b(h, *ci.args[k], **ci.kwargs[k])
            h = h[0] if isinstance(h, tuple) else h
        ref = m.model(ids[:1]).last_hidden_state
    torch.testing.assert_close(m.model.norm(h), ref)


def test_hessian_hooks_share_inputs():
    m = tiny_model("llama", layers=1)
    _, blocks = find_blocks(m)
    ci = capture_inputs(m, blocks, torch.randint(0, 320, (2, 8)))
    lin = find_linears(blocks[0])
    hooks = HessianHooks(lin, lambda c: HessianAccumulator(c))
    with hooks, torch.no_grad():
        for i in range(2):
            blocks[0](ci.hidden[i : i + 1], *ci.args[0], **ci.kwargs[0])
            hooks.end_forward()
    assert hooks.groups == [["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ["self_attn.o_proj"],
                            ["mlp.gate_proj", "mlp.up_proj"], ["mlp.down_proj"]]
    acc = hooks.accumulator("self_attn.k_proj")
    assert acc is hooks.accumulator("self_attn.q_proj") and acc.num_tokens == 16


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3"])
def test_pipeline_writes_fake_quantized_model(tmp_path, family):
    """The in-memory model after quantization equals a model rebuilt from the checkpoint's codes."""
    from matgptq.api import quantize_model

    m = tiny_model(family, layers=2)
    ids = torch.randint(0, 320, (4, 24), generator=torch.Generator().manual_seed(1))
    ref = tiny_model(family, layers=2)
    r = quantize_model(m, tmp_path / "ck", QuantConfig(bits=(8, 4, 3), group_size=32), calibration=ids, progress=False)
    ck = open_checkpoint(r.path)
    qws, rest = ck.read()
    assert sorted(qws) == sorted(r.layers) and len(qws) == 14
    for name, qw in qws.items():
        assert torch.equal(qw.codes, r.layers[name].codes)
        assert torch.equal(m.get_submodule(name).weight, qw.dequantize(8).to(torch.float32))
        w = ref.get_submodule(name).weight
        err8, err3 = ((qw.dequantize(b) - w).norm() / w.norm() for b in (8, 3))
        assert err8 < 0.2 and err8 < err3, (name, err8, err3)
    # unquantized tensors are stored as they were
    torch.testing.assert_close(rest["model.embed_tokens.weight"], ref.model.embed_tokens.weight, rtol=0, atol=0)
    assert "model.layers.0.input_layernorm.weight" in rest


def test_group_size_must_divide_before_work(tmp_path):
    from matgptq.api import quantize_model

    m = tiny_model("llama", layers=1)
    with pytest.raises(ValueError, match="group_size=48 does not divide"):
        quantize_model(m, tmp_path / "x", QuantConfig(group_size=48), calibration=torch.zeros(1, 8, dtype=torch.long))
    assert not (tmp_path / "x.partial").exists()
