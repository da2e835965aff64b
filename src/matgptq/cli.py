"""``matgptq`` command line: a thin layer over :mod:`matgptq.api`.

    matgptq quantize MODEL --out DIR [--bits 8,4,3] [--group-size 128] [--calib sotu] ...
    matgptq eval CKPT [CKPT ...] [--bits 8,6,4,3,2] [--data sotu] [--json out.json] [--plot out.png]
    matgptq info CKPT
    matgptq search CKPT --target-bits 3.25 [--levels 2,3,4,6,8] [--method evolution|knapsack|greedy] ...
    matgptq demo
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _ints(s: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in s.replace(" ", "").split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a comma-separated list of integers, e.g. 8,4,3") from None


def _floats(s: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in s.split(",") if x)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a comma-separated list of numbers, e.g. 1,1,1") from None


def _group(s: str) -> int | None:
    if s.lower() in ("none", "-1", "row"):
        return None
    try:
        return int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"group size {s!r} must be an integer or 'none'") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="matgptq", description="Matryoshka post-training quantization (MatGPTQ)")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    sub = p.add_subparsers(dest="command", required=True)

    q = sub.add_parser("quantize", help="quantize a causal LM into one sliceable checkpoint")
    q.add_argument("model", help="model folder (config.json + safetensors) or a .gguf file")
    q.add_argument("-o", "--out", required=True, help="output checkpoint folder")
    q.add_argument("--method", default="matgptq", choices=["matgptq", "gptq", "rtn"])
    q.add_argument("--bits", type=_ints, default=(8, 4, 3), help="trained widths B (default 8,4,3)")
    q.add_argument("--lambdas", type=_floats, default=None, help="weights λ_b, one per width")
    q.add_argument("--master-bits", type=int, default=None, help="master width M (default max(B))")
    q.add_argument("--group-size", type=_group, default=128, help="columns per group, or 'none'")
    q.add_argument("--asym", action="store_true", help="asymmetric grid (default symmetric)")
    q.add_argument("--slicing", default="round", choices=["round", "nested"])
    q.add_argument("--act-order", action="store_true")
    q.add_argument("--static-groups", action="store_true")
    q.add_argument("--damp", type=float, default=0.01)
    q.add_argument("--calib", default="sotu", help="sotu | wikitext2 | c4 | fineweb-edu | path to .txt/.jsonl")
    q.add_argument("--calib-samples", type=int, default=128)
    q.add_argument("--seq-len", type=int, default=2048)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    q.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"])
    q.add_argument("--default-bits", type=int, default=None, help="precision load() uses by default")
    q.add_argument("--layer-bits", default=None, help="JSON file {module name: bits} stored with the checkpoint")
    q.add_argument("--skip", action="append", default=[], help="fnmatch pattern of block linears to keep in float")
    q.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    q.add_argument("--no-resume", action="store_true", help="ignore a partial run and start over")
    q.add_argument("--offload-activations", action="store_true", help="keep block activations on the CPU")

    e = sub.add_parser("eval", help="perplexity of checkpoints at several precisions")
    e.add_argument("models", nargs="+", help="checkpoint folders (or float model folders)")
    e.add_argument("--bits", type=_ints, default=None, help="precisions (default 8,6,4,3,2)")
    e.add_argument("--data", default="sotu", help="sotu | wikitext2 | c4 | fineweb-edu | path")
    e.add_argument("--seq-len", type=int, default=2048)
    e.add_argument("--max-windows", type=int, default=None, help="evaluate only the first N windows")
    e.add_argument("--batch-size", type=int, default=1)
    e.add_argument("--bos", action="store_true", help="start every window with the BOS token")
    e.add_argument("--device", default="auto")
    e.add_argument("--json", default=None, help="write the results here")
    e.add_argument("--plot", default=None, help="write a PNG of perplexity against bits per weight")
    e.add_argument("--profile", action="append", default=None,
                   help="evaluate a stored per-layer profile (repeatable); without --bits only the profiles")

    i = sub.add_parser("info", help="metadata, layers and size per precision of a checkpoint")
    i.add_argument("checkpoint")
    i.add_argument("--json", action="store_true", help="print JSON")

    s = sub.add_parser("search", help="per-layer widths for a memory budget (Mix'n'Match), stored as a profile")
    s.add_argument("checkpoint")
    s.add_argument("--target-bits", type=float, required=True, help="average bits per weight, e.g. 3.25")
    s.add_argument("--levels", type=_ints, default=None, help="widths to choose from (default 2,3,4,6,8)")
    s.add_argument("--count-scales", action="store_true", help="the budget counts scales (+ zeros) too")
    s.add_argument("--no-group-by-shape", action="store_true", help="let layers of any shape trade levels")
    s.add_argument("--method", default="evolution", choices=["evolution", "knapsack", "greedy"])
    s.add_argument("--generations", type=int, default=100)
    s.add_argument("--offspring", type=int, default=32)
    s.add_argument("--tokens", type=_ints, default=(2048, 8192, 32768), help="calibration tokens per stage")
    s.add_argument("--survivors", type=_ints, default=(8, 2, 1), help="candidates kept per stage")
    s.add_argument("--max-mutations", type=int, default=1, help="level switches per offspring (1..N)")
    s.add_argument("--sensitivity-tokens", type=int, default=2048, help="tokens for the knapsack/greedy table")
    s.add_argument("--topk", type=int, default=256, help="full-precision tokens kept per position for the KL")
    s.add_argument("--reference", default=None, help="float model folder for the KL targets (default: master width)")
    s.add_argument("--calib", default="sotu", help="calibration source (never the evaluation text)")
    s.add_argument("--calib-samples", type=int, default=128)
    s.add_argument("--seq-len", type=int, default=2048)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto")
    s.add_argument("--name", default=None, help="profile name (default: the target, e.g. 3.25)")
    s.add_argument("--state", default=None, help="resume state file (default: inside the checkpoint)")
    s.add_argument("--no-resume", action="store_true", help="start over instead of resuming")
    s.add_argument("--no-save", action="store_true", help="do not store the profile in the checkpoint")
    s.add_argument("--init", default=None, help="start the evolution from this stored profile")
    s.add_argument("--json", default=None, help="write the result here")

    d = sub.add_parser("demo", help="quantize SmolLM2-135M on the CPU and print its perplexity table")
    d.add_argument("--out", default=None, help="where to write the checkpoint (default: a cache folder)")
    d.add_argument("--fast", action="store_true", help="smaller calibration and evaluation sets")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    from .checkpoint import CorruptCheckpointError
    from .models.traverse import UnsupportedModelError

    try:
        return {"quantize": _quantize, "eval": _eval, "info": _info, "demo": _demo,
                "search": _search}[args.command](args)
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError, ImportError,
            CorruptCheckpointError, UnsupportedModelError, RuntimeError) as exc:
        print(f"matgptq {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _quantize(args) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .api import quantize_model
    from .quant import QuantConfig

    config = QuantConfig(
        method=args.method, bits=args.bits, lambdas=args.lambdas, master_bits=args.master_bits,
        group_size=args.group_size, sym=not args.asym, slicing=args.slicing, act_order=args.act_order,
        static_groups=args.static_groups, damp=args.damp,
    )
    layer_bits = None
    if args.layer_bits:
        try:
            layer_bits = json.loads(Path(args.layer_bits).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"--layer-bits {args.layer_bits}: {e}; give a JSON file {{module: bits}}") from None
    with logging_redirect_tqdm():
        r = quantize_model(
            args.model, args.out, config, calibration=args.calib, num_samples=args.calib_samples,
            seq_len=args.seq_len, seed=args.seed, device=args.device, dtype=args.dtype,
            skip=tuple(args.skip), default_bits=args.default_bits, layer_bits=layer_bits,
            overwrite=args.overwrite, resume=not args.no_resume,
            offload_activations=args.offload_activations, progress=not args.quiet,
        )
    print(f"wrote {r.path} ({len(r.layers)} quantized linears)")
    return 0


def _eval(args) -> int:
    from .api import evaluate
    from .eval.report import format_table, plot_results

    if args.plot:
        _check_png(args.plot)
    bits = args.bits if args.bits is not None else (() if args.profile else (8, 6, 4, 3, 2))
    runs = [
        evaluate(m, bits, data=args.data, seq_len=args.seq_len, max_windows=args.max_windows,
                 batch_size=args.batch_size, bos=args.bos, device=args.device, progress=not args.quiet,
                 profile=args.profile)
        for m in args.models
    ]
    print(format_table(runs))
    if args.json:
        Path(args.json).write_text(json.dumps(runs if len(runs) > 1 else runs[0], indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        plot_results(runs, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _check_png(path: str) -> None:
    if not path.lower().endswith(".png"):
        raise ValueError(f"--plot {path}: give a file name ending in .png")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError("--plot needs matplotlib; run: pip install matplotlib") from None


def _info(args) -> int:
    from .checkpoint.info import checkpoint_info, format_info

    info = checkpoint_info(args.checkpoint)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def _search(args) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .search.run import result_dict, search_bits

    with logging_redirect_tqdm():
        r = search_bits(
            args.checkpoint, args.target_bits, method=args.method, levels=args.levels, count_scales=args.count_scales,
            group_by_shape=not args.no_group_by_shape, generations=args.generations, offspring=args.offspring,
            survivors=args.survivors, tokens=args.tokens, max_mutations=args.max_mutations,
            sensitivity_tokens=args.sensitivity_tokens, topk=args.topk, calibration=args.calib,
            num_samples=args.calib_samples, seq_len=args.seq_len, seed=args.seed, reference=args.reference,
            device=args.device, name=args.name, save=not args.no_save, state_path=args.state,
            resume=not args.no_resume, progress=not args.quiet, init=args.init,
        )
    widths = sorted(r.layer_bits.values())
    hist = ", ".join(f"{widths.count(b)}x{b}b" for b in sorted(set(widths)))
    where = "not stored" if args.no_save else f"stored as profile {r.name!r} in {r.checkpoint}"
    print(f"{r.method}: {r.average_bits:.4f} bits/weight (target {r.target_bits:g}), KL {r.fitness:.5f}; "
          f"{hist}; {r.size.get('bits_per_weight')} bits/weight with scales; {where}")
    if args.json:
        Path(args.json).write_text(json.dumps(result_dict(r), indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 0


def _demo(args) -> int:
    from .demo import run_demo

    run_demo(out=args.out, fast=args.fast)
    return 0


if __name__ == "__main__":
    sys.exit(main())
