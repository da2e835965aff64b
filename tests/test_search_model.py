"""Mix'n'Match on a tiny random Llama checkpoint: budget of every evaluated candidate, profiles in
the checkpoint, load(profile=), info/eval/CLI, in-memory switching (no disk reads), resume, bad input."""

import copy
import json

import pytest
import torch

from _tiny_models import tiny_model, tiny_tokenizer
from matgptq import cli
from matgptq.api import evaluate, load, quantize_model
from matgptq.checkpoint import open_checkpoint
from matgptq.checkpoint.info import checkpoint_info, format_info
from matgptq.modules import QuantLinear
from matgptq.quant import QuantConfig
from matgptq.search.run import budget_for, search_bits

IDS = torch.randint(0, 320, (4, 24), generator=torch.Generator().manual_seed(1))
POOL = torch.randint(0, 320, (8, 16), generator=torch.Generator().manual_seed(7))
FAST = dict(generations=4, offspring=6, survivors=(2, 1), tokens=(16, 32), calibration=POOL, topk=64,
            progress=False)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices: one thread is faster, and immune to a busy machine's thread contention."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    r = quantize_model(tiny_model("llama", layers=2), root / "ck", QuantConfig(bits=(8, 4, 3), group_size=32),
                       calibration=IDS, progress=False)
    tiny_tokenizer().save_pretrained(r.path)
    return r.path


@pytest.fixture(scope="module")
def model(ckpt):
    return load(ckpt, bits=8)


def _fresh(ckpt, tmp_path):
    import shutil

    dst = tmp_path / "ck"
    shutil.copytree(ckpt, dst)
    return dst


def test_every_candidate_fits_with_scales_counted(ckpt, model, tmp_path):
    for target, seed in ((3.0, 0), (3.8, 1), (2.9, 2)):
        budget = budget_for(ckpt, target, count_scales=True)
        seen = []
        search_bits(ckpt, target, count_scales=True, seed=seed, model=model, save=False,
                    state_path=tmp_path / f"s{seed}.json", on_candidate=seen.append, **FAST)
        assert len(seen) > 10
        assert all(budget.cost(budget.from_map(m)) <= target * budget.total_numel for m in seen)


def test_profile_round_trip_info_and_eval(ckpt, model, tmp_path, capsys):
    ck = _fresh(ckpt, tmp_path)
    r = search_bits(ck, 3.25, model=model, **FAST)
    assert r.name == "3.25" and r.generations == 4 and r.average_bits <= 3.25
    assert set(r.layer_bits) == set(open_checkpoint(ck).modules)
    stored = json.loads((ck / "config.json").read_text())["quantization_config"]["profiles"]["3.25"]
    assert stored["layer_bits"] == r.layer_bits and stored["method"] == "evolution"
    m = load(ck, profile="3.25")
    got = {n: mod.bits for n, mod in m.named_modules() if isinstance(mod, QuantLinear)}
    assert got == r.layer_bits
    # the profile's model equals load(bits=map) exactly
    x = POOL[:2]
    with torch.no_grad():
        assert torch.equal(m(x).logits, load(ck, bits=r.layer_bits)(x).logits)
    info = checkpoint_info(ck)
    assert info["profiles"]["3.25"]["average_bits"] == pytest.approx(r.average_bits, abs=1e-4)
    assert info["profiles"]["3.25"]["bits_per_weight"] > info["profiles"]["3.25"]["average_bits"]
    assert "3.25" in format_info(info) and "evolution" in format_info(info)
    # a knapsack profile next to it; both listed
    k = search_bits(ck, 3.0, method="knapsack", model=model, sensitivity_tokens=32, calibration=POOL, topk=64,
                    progress=False)
    assert k.name == "3-knapsack" and k.average_bits <= 3.0
    assert cli.main(["info", str(ck)]) == 0
    out = capsys.readouterr().out
    assert "3.25" in out and "3-knapsack" in out and "knapsack" in out
    # eval --profile
    res = evaluate(ck, (), profile=["3.25", "3-knapsack"], seq_len=16, max_windows=2)
    assert [x["profile"] for x in res["results"]] == ["3.25", "3-knapsack"]
    assert all(x["perplexity"] > 1 for x in res["results"])
    assert cli.main(["eval", str(ck), "--profile", "3.25", "--seq-len", "16", "--max-windows", "2"]) == 0
    assert "3.25" in capsys.readouterr().out


def test_same_seed_same_result_and_resume(ckpt, model, tmp_path):
    a = search_bits(ckpt, 3.0, model=model, save=False, state_path=tmp_path / "a.json", **FAST)
    b = search_bits(ckpt, 3.0, model=model, save=False, state_path=tmp_path / "b.json", **FAST)
    assert a.layer_bits == b.layer_bits and a.fitness == b.fitness
    part = search_bits(ckpt, 3.0, model=model, save=False, state_path=tmp_path / "c.json", stop_after=2, **FAST)
    assert part.generations == 2
    resumed = search_bits(ckpt, 3.0, model=model, save=False, state_path=tmp_path / "c.json", **FAST)
    assert resumed.generations == 4 and resumed.layer_bits == a.layer_bits and resumed.fitness == a.fitness
    assert [h["fitness"] for h in resumed.history] == [h["fitness"] for h in a.history]


def test_candidates_switch_widths_in_memory_without_reading_from_disk(ckpt, tmp_path, monkeypatch):
    import safetensors.torch

    import matgptq.checkpoint.reader as reader
    import matgptq.checkpoint.tensors as tensors

    searching = {"on": False}

    def guard(orig):
        def f(*a, **k):
            if searching["on"]:
                raise AssertionError("weights read from disk during the search")
            return orig(*a, **k)
        return f

    monkeypatch.setattr(reader, "load_shard", guard(reader.load_shard))
    monkeypatch.setattr(tensors, "load_shard", guard(tensors.load_shard))
    monkeypatch.setattr(safetensors.torch, "load_file", guard(safetensors.torch.load_file))
    monkeypatch.setattr(safetensors.torch, "safe_open", guard(safetensors.torch.safe_open))
    switches = []
    orig_set = QuantLinear.set_bits
    monkeypatch.setattr(QuantLinear, "set_bits", lambda self, b: (switches.append(b), orig_set(self, b))[1])

    def on_candidate(_):
        searching["on"] = True

    m = load(ckpt, bits=8)
    ids_before = {n: id(mod.qweight) for n, mod in m.named_modules() if isinstance(mod, QuantLinear)}
    r = search_bits(ckpt, 3.0, model=m, save=False, state_path=tmp_path / "s.json", on_candidate=on_candidate, **FAST)
    assert searching["on"] and len(switches) > 20 and r.average_bits <= 3.0
    assert ids_before == {n: id(mod.qweight) for n, mod in m.named_modules() if isinstance(mod, QuantLinear)}


def test_bad_input_fails_early(ckpt, model, tmp_path, capsys):
    with pytest.raises(ValueError, match="below the lowest level"):
        search_bits(ckpt, 1.5, **FAST)
    with pytest.raises(ValueError, match="above the highest level"):
        search_bits(ckpt, 8.5, **FAST)
    with pytest.raises(ValueError, match=r"levels \[9\] cannot be served.*2..8"):
        search_bits(ckpt, 3.0, levels=(2, 3, 9), **FAST)
    with pytest.raises(ValueError, match="method="):
        search_bits(ckpt, 3.0, method="anneal", **FAST)
    with pytest.raises(ValueError, match="profile '2.75' is not in this checkpoint.*matgptq search"):
        load(ckpt, profile="2.75")
    with pytest.raises(ValueError, match="not both"):
        load(ckpt, bits=3, profile="3.25")
    plain = tmp_path / "plain"
    tiny_model("llama").save_pretrained(plain)
    with pytest.raises(ValueError, match="not a quantized checkpoint"):
        search_bits(plain, 3.0, **FAST)
    for argv, msg in (
        (["search", str(ckpt), "--target-bits", "1"], "below the lowest level"),
        (["search", str(ckpt), "--target-bits", "3", "--levels", "2,12"], "cannot be served"),
        (["search", str(ckpt), "--target-bits", "3", "--tokens", "2048", "--survivors", "4,1"], "same length"),
        (["search", str(plain), "--target-bits", "3"], "not a quantized checkpoint"),
        (["eval", str(ckpt), "--profile", "nope"], "profile 'nope' is not in this checkpoint"),
    ):
        assert cli.main(argv) == 2, argv
        assert msg in capsys.readouterr().err


def test_cli_search_writes_profile(ckpt, tmp_path, capsys):
    ck = _fresh(ckpt, tmp_path)
    argv = ["-q", "search", str(ck), "--target-bits", "3.5", "--generations", "2", "--offspring", "4", "--tokens", "16,32",
            "--survivors", "2,1", "--calib-samples", "4", "--seq-len", "16", "--topk", "32", "--json",
            str(tmp_path / "r.json")]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "stored as profile '3.5'" in out
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["average_bits"] <= 3.5 and r["generations"] == 2
    assert load(ck, profile="3.5").get_submodule("model.layers.0.mlp.up_proj").bits in (2, 3, 4, 6, 8)


def test_prefix_reuse_gives_the_same_kl_and_sparse_equals_dense(ckpt, model):
    from matgptq.search.fitness import KLFitness
    from matgptq.search.kl import dense_kl

    names = open_checkpoint(ckpt).modules
    rng = torch.Generator().manual_seed(3)
    cands = [tuple([8] * len(names))] + [tuple(int(b) for b in torch.tensor([2, 3, 4, 6, 8])[
        torch.randint(0, 5, (len(names),), generator=rng)]) for _ in range(5)]
    cands.append(tuple([8] * (len(names) - 1) + [2]))  # differs only in the last block
    fast = KLFitness(model, names, POOL, topk=64)(cands, [0, 3, 5])
    slow = KLFitness(model, names, POOL, topk=64, reuse_prefix=False)(cands, [0, 3, 5])
    assert fast == slow
    # k = vocab: the fitness is the dense KL (float64 oracle) against the master-width model
    full = KLFitness(model, names, POOL, topk=320, reuse_prefix=False)
    got = full([cands[1]], [2])[0]
    full.apply(cands[0])
    with torch.no_grad():
        p = model(POOL[2:3]).logits[0].double()
        full.apply(cands[1])
        q = model(POOL[2:3]).logits[0].double()
    assert got == pytest.approx(float(dense_kl(p, q).mean()), rel=1e-4)


def test_init_from_a_stored_profile(ckpt, model, tmp_path):
    ck = _fresh(ckpt, tmp_path)
    k = search_bits(ck, 3.0, method="knapsack", model=model, sensitivity_tokens=16, calibration=POOL, topk=64,
                    progress=False)
    r = search_bits(ck, 3.0, model=model, save=False, init=k.name, state_path=tmp_path / "s.json",
                    **{**FAST, "generations": 0})
    assert r.layer_bits == k.layer_bits
    with pytest.raises(ValueError, match="over the target"):
        search_bits(ck, 2.5, model=model, save=False, init=k.name, **FAST)
