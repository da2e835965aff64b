"""Every bad input fails before long work, with a message that names the problem and the fix."""

import json

import pytest

from _tiny_models import save_tiny
from matgptq.cli import main


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("m") / "tiny", "llama", layers=2)


@pytest.fixture(scope="module")
def ckpt(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("c") / "ck"
    assert main(["-q", "quantize", str(tiny_dir), "--out", str(out), "--group-size", "32",
                 "--calib-samples", "2", "--seq-len", "32", "--device", "cpu"]) == 0
    return out


def _err(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    return err


def test_quantize_bad_inputs(tiny_dir, tmp_path, capsys):
    q = ["quantize", str(tiny_dir), "--out", str(tmp_path / "o"), "--device", "cpu"]
    assert "not found" in _err(capsys, ["quantize", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert "outside the supported range 2..8" in _err(capsys, q + ["--bits", "9,4"])
    assert "outside the supported range 2..8" in _err(capsys, q + ["--method", "gptq", "--bits", "1"])
    err = _err(capsys, q + ["--group-size", "48"])
    assert "group_size=48 does not divide" in err and "use a divisor" in err
    assert "unknown dataset 'wikitext-9'" in _err(capsys, q + ["--calib", "wikitext-9"])
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert "is empty" in _err(capsys, q + ["--calib", str(empty)])
    (tmp_path / "exists").mkdir()
    assert "already exists" in _err(capsys, ["quantize", str(tiny_dir), "--out", str(tmp_path / "exists")])
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_non_causal_model(tmp_path, capsys):
    d = tmp_path / "bert"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    assert "not a causal LM" in _err(capsys, ["quantize", str(d), "--out", str(tmp_path / "o")])
    d2 = tmp_path / "t5"
    d2.mkdir()
    (d2 / "config.json").write_text(json.dumps({"model_type": "t5", "is_encoder_decoder": True,
                                                "architectures": ["T5ForConditionalGeneration"]}))
    assert "not a causal LM" in _err(capsys, ["quantize", str(d2), "--out", str(tmp_path / "o")])


def test_info(ckpt, capsys):
    assert main(["info", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "14 quantized linears" in out and "matgptq" in out
    assert main(["info", "--json", str(ckpt)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["quantization"]["bits"] == [8, 4, 3]
    sizes = info["size_per_precision"]
    assert sizes["2"]["bits_per_weight"] == 2.5 and sizes["8"]["bits_per_weight"] == 8.5  # fp16 scale / 32


def _copy(ckpt, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(ckpt, dst)
    return dst


def test_truncated_and_missing_shards(ckpt, tmp_path, capsys):
    bad = _copy(ckpt, tmp_path)
    shard = bad / "model-00001-of-00003.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    err = _err(capsys, ["info", str(bad)])
    assert "truncated" in err and "model-00001-of-00003" in err
    shard.write_bytes(b"\x00" * 3)
    assert "truncated" in _err(capsys, ["eval", str(bad), "--device", "cpu"])
    shard.unlink()
    assert "missing shards" in _err(capsys, ["info", str(bad)])
    assert "does not exist" in _err(capsys, ["info", str(tmp_path / "none")])


def test_metadata_that_disagrees(ckpt, tmp_path, capsys):
    bad = _copy(ckpt, tmp_path)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["quantization_config"]["solver"]["group_size"] = 64
    cfg["quantization_config"]["group_size"] = 64
    (bad / "config.json").write_text(json.dumps(cfg))
    err = _err(capsys, ["info", str(bad)])
    assert "metadata disagrees with the tensors" in err
    cfg["quantization_config"]["group_size"] = 16
    (bad / "config.json").write_text(json.dumps(cfg))
    assert "disagrees" in _err(capsys, ["info", str(bad)])
    (bad / "config.json").write_text("{not json")
    assert "not valid JSON" in _err(capsys, ["info", str(bad)])


def test_eval_bad_inputs(ckpt, capsys, tmp_path):
    assert "outside 2..8" in _err(capsys, ["eval", str(ckpt), "--bits", "9", "--device", "cpu"])
    assert "unknown dataset" in _err(capsys, ["eval", str(ckpt), "--data", "nope", "--device", "cpu"])
    assert ".png" in _err(capsys, ["eval", str(ckpt), "--plot", str(tmp_path / "x.jpg")])
