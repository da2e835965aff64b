"""The Python API: ``quantize_model``, ``load``, ``evaluate``. The CLI is a thin layer over it."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .checkpoint import CheckpointWriter, QuantMeta, check_bits, fingerprint, open_checkpoint
from .quant import QuantConfig, QuantizedWeight

log = logging.getLogger("matgptq")
KILL_ENV = "MATGPTQ_KILL_AFTER_BLOCK"  # test hook: SIGKILL the process after writing block k


@dataclass
class QuantizeResult:
    path: Path
    layers: dict[str, QuantizedWeight]
    meta: QuantMeta


def default_bits_for(config: QuantConfig) -> int:
    return 4 if 4 in config.bits else min(config.bits)


def _resolve_device(device) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device} but no CUDA GPU is available; use device='cpu'")
    return device


def quantize_model(
    model: str | os.PathLike | nn.Module,
    out_dir: str | os.PathLike,
    config: QuantConfig | None = None,
    *,
    tokenizer=None,
    calibration: str | torch.Tensor = "sotu",
    num_samples: int = 128,
    seq_len: int = 2048,
    seed: int = 0,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    skip: tuple[str, ...] = (),
    default_bits: int | None = None,
    layer_bits: dict[str, int] | None = None,
    overwrite: bool = False,
    resume: bool = True,
    offload_activations: bool = False,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> QuantizeResult:
    """Quantize every linear layer of the decoder blocks of ``model`` and write one checkpoint.

    ``model``: a model folder, a ``.gguf`` file, or a loaded transformers causal LM (then pass
    ``tokenizer`` unless ``calibration`` is a tensor of token ids [n, seq_len]).
    ``calibration``: ``"sotu"`` (offline), a dataset name (wikitext2, c4, fineweb-edu), a text file,
    or token ids. Re-running the same call after an interruption resumes after the last block.
    """
    from .data import CalibrationSpec, calibration_tokens
    from .models.loading import load_float_model
    from .models.pipeline import check_model, quantize_blocks

    config = config or QuantConfig()
    if not isinstance(config, QuantConfig):
        raise TypeError(f"config must be a QuantConfig, not {type(config).__name__}")
    default_bits = check_bits(default_bits if default_bits is not None else default_bits_for(config), config.master_bits)
    for name, b in (layer_bits or {}).items():
        check_bits(b, config.master_bits)
    device = _resolve_device(device)
    spec = None
    if isinstance(calibration, torch.Tensor):
        if calibration.dim() != 2 or calibration.dtype not in (torch.int64, torch.int32) or calibration.numel() == 0:
            raise ValueError("calibration token ids must be a non-empty integer tensor [num_samples, seq_len]")
    else:
        spec = CalibrationSpec(calibration, num_samples, seq_len, seed)
        spec.check()
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"output folder {out_dir} already exists; pass overwrite=True (--overwrite) or choose another folder")

    # -- the model -----------------------------------------------------------------------------
    source_name = None
    if isinstance(model, (str, os.PathLike)):
        source_name = str(model)
        _precheck_shapes(model, config)
        model, loaded_tok = load_float_model(model, dtype=dtype, cache_dir=None)
        tokenizer = tokenizer or loaded_tok
    model.eval()
    prefix, blocks = check_model(model, config, skip)

    # -- calibration tokens --------------------------------------------------------------------
    if spec is not None:
        if tokenizer is None:
            raise ValueError("no tokenizer: pass tokenizer=... or calibration token ids [n, seq_len]")
        input_ids = calibration_tokens(tokenizer, spec, cache_dir)
        calib_meta = spec.to_dict()
    else:
        input_ids = calibration.long()
        calib_meta = {"source": "token ids", "num_samples": input_ids.shape[0], "seq_len": input_ids.shape[1],
                      "tokens": input_ids.numel(), "seed": None}
    vocab = model.get_input_embeddings().weight.shape[0]
    if int(input_ids.max()) >= vocab or int(input_ids.min()) < 0:
        raise ValueError(f"calibration token ids fall outside the model's vocabulary of {vocab}; use the model's tokenizer")

    model_cfg = model.config.to_dict()
    model_cfg.pop("quantization_config", None)
    model_cfg.pop("_name_or_path", None)
    if not model_cfg.get("architectures"):
        model_cfg["architectures"] = [type(model).__name__]
    model_cfg["dtype"] = str(next(model.parameters()).dtype).replace("torch.", "")
    model_cfg.pop("torch_dtype", None)
    ids_hash = hashlib.sha256(input_ids.numpy().tobytes()).hexdigest()
    fp = fingerprint({"model": model_cfg, "source": source_name, "config": config.to_dict(), "ids": ids_hash,
                      "skip": list(skip), "default_bits": default_bits, "layer_bits": layer_bits,
                      "version": __version__})
    writer = CheckpointWriter(out_dir, fp, len(blocks), prefix, config, overwrite=overwrite, resume=resume)
    writer.check()
    finished = writer.start()
    kill_after = os.environ.get(KILL_ENV)

    def on_block(k: int, qws: dict[str, QuantizedWeight]) -> None:
        writer.write_block(k, blocks[k], qws)
        if kill_after is not None and int(kill_after) == k:
            os.kill(os.getpid(), signal.SIGKILL)

    layers = quantize_blocks(model, input_ids, config, device=device, skip=skip, finished=finished,
                             on_block=on_block, offload_activations=offload_activations, progress=progress)
    meta = QuantMeta(config, sorted(layers), default_bits, layer_bits, calib_meta)
    path = writer.finalize(_rest_state(model, prefix), model_cfg, meta, tokenizer,
                           getattr(model, "generation_config", None))
    log.info("wrote %s", path)
    return QuantizeResult(path, layers, meta)


def _precheck_shapes(path, config: QuantConfig) -> None:
    """Group size against the widths in config.json, before the (possibly long) model load."""
    import json

    from .models.loading import check_model_path

    p = check_model_path(path)
    if not isinstance(p, Path) or p.suffix == ".gguf":
        return
    cfg = json.loads((p / "config.json").read_text())
    cfg = cfg.get("text_config", cfg)
    for key in ("hidden_size", "intermediate_size"):
        width = cfg.get(key)
        if isinstance(width, int):
            try:
                config.check_shape(width)
            except ValueError as e:
                raise ValueError(f"{key}={width}: {e}") from None


def _rest_state(model: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """Every tensor outside the decoder blocks, each shared (tied) storage once."""
    out, seen = {}, set()
    for name, t in model.state_dict().items():
        if name.startswith(prefix + "."):
            continue
        key = (t.data_ptr(), t.shape, t.dtype)
        if t.numel() and key in seen:
            continue
        seen.add(key)
        out[name] = t
    return out


# ---------------------------------------------------------------------------------------------
# loading


def _quant_linear_cls():
    try:
        from .modules import QuantLinear
    except ImportError as e:
        raise ImportError(f"matgptq.modules.QuantLinear is not available ({e})") from None
    return QuantLinear


def _empty_model(model_cfg: dict, dtype: torch.dtype):
    """The model skeleton: parameters on the meta device, buffers (rotary tables) real."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(model_cfg)
    cfg.pop("quantization_config", None)
    model_type = cfg.pop("model_type", None)
    if model_type is None:
        raise ValueError("config.json has no model_type; it is not a Hugging Face model config")
    config = AutoConfig.for_model(model_type, **cfg)
    from .models.loading import meta_parameters

    with meta_parameters():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model


def load(path: str | os.PathLike, bits: int | dict[str, int] | None = None, *, device: str | torch.device = "cpu",
         dtype: str | torch.dtype | None = None, layout: str = "resident", profile: str | None = None) -> nn.Module:
    """A transformers model whose quantized linears serve any precision ``2..master_bits``.

    ``bits``: one width for every layer, or {module name: bits} (others get the default).
    ``profile``: a per-layer map stored by ``matgptq search`` (e.g. ``"3.25"``), instead of ``bits``.
    Switch later with ``model.set_bits(3)`` (in place, no reload). Reads MatGPTQ checkpoints
    written by :func:`quantize_model` and the published MatGPTQ format.

    ``layout``: ``"resident"`` (switchable), ``"fixed"`` (one width per layer), or ``"lop3"``
    (one width per layer, the fastest batch 1-16 decode on a GPU where a layer is at 2, 3 or 4 bits
    on a symmetric grid with groups of 128; the other layers get ``"fixed"``, and a log line
    says how many). Its fast kernel takes fp16 activations: with ``dtype=torch.bfloat16`` every
    layer gets ``"fixed"`` instead (on the H200 the lop3 layout ran bf16 at 0.2-0.7x the speed of
    ``F.linear``, the fixed layout at 1.1-2.3x up to 16 rows; ``benchmarks/bf16_layouts.py``), with
    a warning.
    """
    from .models.loading import parse_dtype
    from .models.traverse import set_submodule

    ck = open_checkpoint(path)
    meta = ck.meta
    if profile is not None:
        from .search.profiles import profile_bits

        if bits is not None:
            raise ValueError(f"give bits= or profile=, not both (bits={bits!r}, profile={profile!r})")
        bits = profile_bits(ck.model_config, str(profile), ck.modules, meta.config.master_bits)
    _check_bits_arg(bits, meta, ck.modules)
    QuantLinear = _quant_linear_cls()
    dtype = parse_dtype(dtype)
    if dtype is None or dtype == "auto":
        name = ck.model_config.get("dtype") or ck.model_config.get("torch_dtype") or "float32"
        dtype = parse_dtype(name) if name != "auto" else torch.float32
    if layout == "lop3" and dtype == torch.bfloat16:
        log.warning("layout='lop3' serves fp16 activations; with dtype=bfloat16 its layers would run slower than "
                    "bf16 F.linear, so they use layout='fixed' (load with dtype=torch.float16 for lop3)")
        layout = "fixed"
    model = _empty_model(ck.model_config, dtype)
    qws, rest = ck.read()
    not_lop3: list[str] = []
    for name, qw in qws.items():
        try:
            lin = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"checkpoint module {name} does not exist in a {type(model).__name__}; "
                             "the config.json does not match the tensors") from None
        if not isinstance(lin, nn.Linear) or (lin.out_features, lin.in_features) != tuple(qw.shape):
            raise ValueError(
                f"{name}: codes have shape {list(qw.shape)} but the model config gives "
                f"{getattr(lin, 'out_features', '?')}x{getattr(lin, 'in_features', '?')}; the metadata "
                "disagrees with the tensors"
            )
        bias = rest.pop(f"{name}.bias", None)
        if (bias is None) != (lin.bias is None):
            raise ValueError(f"{name}: bias {'missing from' if bias is None else 'unexpected in'} the checkpoint")
        layer_bits = meta.bits_for(name, bits)
        try:
            ql = QuantLinear.from_quantized(qw, bias=bias, bits=layer_bits, layout=layout, dtype=dtype)
        except ValueError:
            if layout != "lop3":
                raise
            ql = QuantLinear.from_quantized(qw, bias=bias, bits=layer_bits, layout="fixed", dtype=dtype)
            not_lop3.append(name)
        set_submodule(model, name, ql)
    if not_lop3:
        log.info("layout='lop3': %d of %d layers are not 2/3/4-bit symmetric with groups of 128 (e.g. %s); they use "
                 "layout='fixed'", len(not_lop3), len(qws), not_lop3[0])
    rest = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in rest.items()}
    result = model.load_state_dict(rest, strict=False, assign=True)
    if result.unexpected_keys:
        raise ValueError(f"checkpoint tensors not in the model: {result.unexpected_keys[:5]}; the config disagrees with the tensors")
    model.tie_weights()
    meta_left = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if meta_left:
        raise ValueError(f"the checkpoint is missing tensors {meta_left[:5]}; copy the whole checkpoint again")
    model.eval()
    model.matgptq = meta
    model.set_bits = types.MethodType(set_bits, model)
    return model.to(device)


def _check_bits_arg(bits, meta: QuantMeta, modules: list[str]) -> None:
    m = meta.config.master_bits
    if isinstance(bits, dict):
        unknown = sorted(set(bits) - set(modules))
        if unknown:
            raise ValueError(f"bits map names modules that are not quantized: {unknown[:5]}")
        for b in bits.values():
            check_bits(b, m)
    elif bits is not None:
        check_bits(bits, m)


def set_bits(model: nn.Module, bits: int | dict[str, int]) -> nn.Module:
    """Switch every quantized linear (or those in a {name: bits} map) to a precision, in place."""
    meta: QuantMeta = model.matgptq
    QuantLinear = _quant_linear_cls()
    names = [n for n, m in model.named_modules() if isinstance(m, QuantLinear)]
    _check_bits_arg(bits, meta, names)
    for name in names:
        model.get_submodule(name).set_bits(meta.bits_for(name, bits))
    return model


# ---------------------------------------------------------------------------------------------
# evaluation


def bits_per_weight(ck_or_meta, headers: dict[str, dict], bits: int) -> float:
    """Average storage bits per quantized weight at ``bits``: codes + scales (+ zeros if asym)."""
    from .checkpoint import group_overhead_bits

    meta = ck_or_meta
    total_w, total_bits = 0, 0.0
    for k, h in headers.items():
        if not k.endswith(".qweight"):
            continue
        r, c = h["shape"]
        total_w += r * c
        total_bits += r * c * bits + group_overhead_bits(headers, k[: -len(".qweight")], meta.config.sym)
    return total_bits / max(total_w, 1)


def evaluate(model: str | os.PathLike | nn.Module, bits=(8, 6, 4, 3, 2), *, data: str = "sotu",
             seq_len: int = 2048, max_windows: int | None = None, batch_size: int = 1, bos: bool = False,
             tokenizer=None, device: str | torch.device = "cpu", label: str | None = None,
             progress: bool = False, profile: str | list[str] | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Perplexity of one checkpoint at several precisions (or of a float model), METHOD §6.

    ``profile``: also evaluate these stored per-layer profiles (``matgptq search``); pass
    ``bits=()`` to evaluate only them. Returns a JSON-ready dict: settings (model, data, seq_len,
    windows, BOS, versions, quantization metadata) and one result per precision or profile.
    """
    import transformers

    from .data import check_source, eval_tokens
    from .data.sources import describe
    from .eval import perplexity
    from .models.loading import load_float_model

    check_source(data, "evaluation")
    device = _resolve_device(device)
    bits = [bits] if isinstance(bits, int) else list(bits or [])
    profiles = [profile] if isinstance(profile, str) else list(profile or [])
    quantized, meta, headers, name = False, None, None, label
    profile_maps = {}
    if isinstance(model, (str, os.PathLike)):
        p = Path(model)
        name = name or p.name
        cfg = p / "config.json"
        if cfg.is_file() and '"quantization_config"' in cfg.read_text() and _is_matgptq(cfg):
            ck = open_checkpoint(p)
            meta, headers = ck.meta, ck.headers
            for b in bits:
                check_bits(b, meta.config.master_bits)
            if profiles:
                from .search.profiles import profile_bits

                profile_maps = {n: profile_bits(ck.model_config, str(n), ck.modules, meta.config.master_bits)
                                for n in profiles}
            if not bits and not profiles:
                bits = [meta.default_bits]
            model = load(p, bits=bits[0] if bits else profile_maps[profiles[0]], device=device)
            quantized = True
            if tokenizer is None:
                from transformers import AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(p)
        else:
            model, tok = load_float_model(p)
            model = model.to(device)
            tokenizer = tokenizer or tok
    elif hasattr(model, "matgptq"):
        quantized, meta = True, model.matgptq
    if profiles and not profile_maps:
        raise ValueError(f"profile={profiles!r} needs a checkpoint folder written by matgptq (with stored profiles)")
    if tokenizer is None:
        raise ValueError("no tokenizer: pass tokenizer=... or a model folder that holds tokenizer files")
    tokens = eval_tokens(tokenizer, data)
    bos_id = tokenizer.bos_token_id if bos else None
    if bos and bos_id is None:
        raise ValueError("bos=True but the tokenizer has no BOS token; evaluate without --bos")
    results = []
    for b in (bits if quantized else [None]):
        if quantized:
            model.set_bits(b)
        r = perplexity(model, tokens, seq_len, batch_size, max_windows, bos_id, device, progress)
        r = {"bits": b, **r}
        if quantized and headers is not None:
            r["bits_per_weight"] = round(bits_per_weight(meta, headers, b), 4)
        elif not quantized:
            r["bits_per_weight"] = 16.0
        log.info("%s bits=%s perplexity %.4f", name, b, r["perplexity"])
        for mod in model.modules():  # keep one dequantized width in memory, not all of them
            if hasattr(mod, "clear_cache"):
                mod.clear_cache()
        results.append(r)
    for pname, pmap in profile_maps.items():
        from .search.profiles import profile_size

        model.set_bits(pmap)
        r = perplexity(model, tokens, seq_len, batch_size, max_windows, bos_id, device, progress)
        size = profile_size(headers, meta.config.sym, pmap)
        r = {"bits": str(pname), "profile": str(pname), **r, "bits_per_weight": size["bits_per_weight"],
             "average_bits": size["average_bits"]}
        log.info("%s profile %s perplexity %.4f", name, pname, r["perplexity"])
        for mod in model.modules():
            if hasattr(mod, "clear_cache"):
                mod.clear_cache()
        results.append(r)
    return {
        "model": name or type(model).__name__,
        "data": data,
        "data_text": describe(data, "evaluation") if not Path(data).is_file() else data,
        "protocol": "METHOD §6: text joined with \\n\\n, tokenized once without special tokens, "
                    "non-overlapping windows, mean token NLL in fp32",
        "seq_len": seq_len,
        "max_windows": max_windows,
        "eval_tokens_total": int(tokens.numel()),
        "bos": bos,
        "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "quantization": meta.to_dict() if (meta is not None and not meta.published) else (
            {"format": "published", "group_size": meta.config.group_size} if meta else None),
        "versions": {"matgptq": __version__, "torch": torch.__version__, "transformers": transformers.__version__},
        "results": results,
    }


def _is_matgptq(cfg: Path) -> bool:
    import json

    qc = json.loads(cfg.read_text()).get("quantization_config") or {}
    return qc.get("quant_method") in ("matgptq", "matgptq_quant")
