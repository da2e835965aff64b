"""Perplexity protocol (METHOD §6), evaluate() output, CLI eval with JSON and PNG."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from _tiny_models import save_tiny, tiny_model
from matgptq.cli import main
from matgptq.eval import perplexity, windows


def test_windows_are_non_overlapping_and_drop_the_tail():
    t = torch.arange(10)
    assert windows(t, 4).tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert windows(t, 4, max_windows=1).tolist() == [[0, 1, 2, 3]]
    assert windows(t, 4, bos_token_id=99).tolist() == [[99, 0, 1, 2], [99, 3, 4, 5], [99, 6, 7, 8]]
    with pytest.raises(ValueError, match="fewer than one window"):
        windows(t, 32)


def test_perplexity_matches_a_direct_computation():
    m = tiny_model("llama", layers=1)
    tokens = torch.randint(0, 320, (100,), generator=torch.Generator().manual_seed(0))
    r = perplexity(m, tokens, seq_len=32, batch_size=2)
    nll = []
    with torch.no_grad():
        for w in tokens[:96].view(3, 32):
            logits = m(w[None]).logits[0, :-1].double()
            nll.append(F.cross_entropy(logits, w[1:], reduction="none"))
    want = math.exp(torch.cat(nll).mean().item())
    assert r["windows"] == 3 and r["tokens_scored"] == 93 and r["seq_len"] == 32
    assert abs(r["perplexity"] - want) / want < 1e-5


def test_cli_quantize_eval_plot(tmp_path, capsys):
    model = save_tiny(tmp_path / "tiny", "llama", layers=2)
    ck = tmp_path / "ck"
    assert main(["-q", "quantize", str(model), "--out", str(ck), "--group-size", "32", "--calib-samples", "4",
                 "--seq-len", "32", "--device", "cpu"]) == 0
    cfg = json.loads((ck / "config.json").read_text())["quantization_config"]
    assert cfg["calibration"] == {"source": "sotu", "num_samples": 4, "seq_len": 32, "seed": 0, "tokens": 128,
                                  "text": "builtin:sotu_calibration.txt"}
    assert cfg["method"] == "matgptq" and cfg["bits"] == [8, 4, 3] and cfg["slicing"] == "round"
    assert (ck / "tokenizer.json").is_file() and not list(ck.glob("*.bin"))
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    capsys.readouterr()
    assert main(["-q", "eval", str(ck), str(model), "--bits", "8,4,2", "--seq-len", "32", "--max-windows", "3",
                 "--device", "cpu", "--json", str(out_json), "--plot", str(out_png)]) == 0
    table = capsys.readouterr().out
    assert "perplexity" in table
    runs = json.loads(out_json.read_text())
    q, fp = runs
    assert [r["bits"] for r in q["results"]] == [8, 4, 2] and fp["results"][0]["bits"] is None
    assert q["seq_len"] == 32 and q["max_windows"] == 3 and q["quantization"]["group_size"] == 32
    assert "transformers" in q["versions"] and q["results"][0]["windows"] == 3
    ppl = {r["bits"]: r["perplexity"] for r in q["results"]}
    assert abs(ppl[8] - fp["results"][0]["perplexity"]) / ppl[8] < 0.05
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
