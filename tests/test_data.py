"""Text sources, tokenization, deterministic calibration sampling and its cache."""

import json

import pytest
import torch

from _tiny_models import tiny_tok  # noqa: F401 (fixture)
from matgptq.data import CalibrationSpec, calibration_tokens, load_documents, sample_windows, tokenize_text
from matgptq.data.sources import HF_DATASETS, check_source


def test_builtin_corpus_is_split_and_disjoint():
    calib = load_documents("sotu", "calibration")
    evald = load_documents("sotu", "evaluation")
    assert len(calib) > 20 and len(evald) >= 30
    assert not set(calib) & set(evald)
    assert sum(map(len, calib)) > 1_000_000


def test_unknown_and_empty_sources_fail_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'wikitext3'.*sotu"):
        check_source("wikitext3")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        check_source(str(empty))
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n   \n")
    with pytest.raises(ValueError, match="no text"):
        load_documents(str(blank))


def test_local_files(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("first doc\nline two\n\nsecond doc\n")
    assert load_documents(str(txt)) == ["first doc\nline two", "second doc"]
    jl = tmp_path / "b.jsonl"
    jl.write_text("\n".join(json.dumps({"text": t}) for t in ["x y", "z"]) + "\n")
    assert load_documents(str(jl), "evaluation") == ["x y", "z"]
    bad = tmp_path / "c.jsonl"
    bad.write_text('{"body": 1}\n')
    with pytest.raises(ValueError, match="'text' field"):
        load_documents(str(bad))


def test_pinned_hf_configs():
    assert HF_DATASETS["wikitext2"].name == "wikitext-2-raw-v1"
    assert HF_DATASETS["c4"].data_files["validation"].startswith("en/c4-validation.00000")
    assert HF_DATASETS["fineweb-edu"].name == "sample-10BT"


def test_sampling_is_deterministic_by_seed():
    stream = torch.arange(10_000)
    a = sample_windows(stream, 8, 64, seed=3)
    b = sample_windows(stream, 8, 64, seed=3)
    c = sample_windows(stream, 8, 64, seed=4)
    assert a.shape == (8, 64) and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[:, 1:] - a[:, :-1], torch.ones(8, 63, dtype=torch.long))
    with pytest.raises(ValueError, match="fewer than seq_len"):
        sample_windows(torch.arange(10), 1, 64, 0)


def test_calibration_cache(tmp_path, tiny_tok):
    spec = CalibrationSpec("sotu", num_samples=4, seq_len=32, seed=0)
    a = calibration_tokens(tiny_tok, spec, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.safetensors"))
    assert len(files) == 1
    b = calibration_tokens(tiny_tok, spec, cache_dir=tmp_path)
    assert torch.equal(a, b) and a.shape == (4, 32)
    files[0].write_bytes(b"garbage")  # a corrupt cache entry is rebuilt
    assert torch.equal(calibration_tokens(tiny_tok, spec, cache_dir=tmp_path), a)
    with pytest.raises(ValueError, match="num_samples"):
        CalibrationSpec("sotu", num_samples=0).check()


def test_tokenize_text_rejects_empty(tiny_tok):
    with pytest.raises(ValueError, match="empty"):
        tokenize_text(tiny_tok, ["", "  "])


def test_hf_sources_use_pinned_arguments(monkeypatch):
    """No network: a stand-in `datasets` module records how each source is requested."""
    import sys
    import types

    calls = []

    def load_dataset(path, name=None, split=None, streaming=False, **kw):
        calls.append((path, name, split, streaming, kw))
        return iter({"text": f"doc {i}"} for i in range(30000))

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    evald = load_documents("fineweb-edu", "evaluation")
    assert evald[0] == "doc 20000" and len(evald) == 1100  # held out from the calibration docs
    assert calls[-1][:4] == ("HuggingFaceFW/fineweb-edu", "sample-10BT", "train", True)
    c4 = load_documents("c4", "evaluation")
    assert len(c4) == 1100 and calls[-1][4] == {"data_files": {"validation": "en/c4-validation.00000-of-00008.json.gz"}}
    wt = load_documents("wikitext2", "evaluation")
    assert len(wt) == 1 and calls[-1][:3] == ("wikitext", "wikitext-2-raw-v1", "test")
