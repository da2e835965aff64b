"""The sequential pipeline (METHOD §4): block by block, capture -> Hessians -> solve -> replace ->
propagate the quantized block's outputs to the next block.

Knows nothing of the math: it calls the solver API (``HessianAccumulator``, ``quantize_layer(s)``)
and ``QuantizedWeight.dequantize``. Only the active block and its activations live on ``device``;
the rest of the model stays where it is (CPU).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..quant import QuantConfig, QuantizedWeight
from .capture import capture_inputs, to_device
from .hessian import HessianHooks
from .traverse import find_blocks, find_linears

log = logging.getLogger("matgptq")

BlockResult = dict[str, QuantizedWeight]  # names relative to the block


def _solver():
    try:
        from ..quant import HessianAccumulator, quantize_layer, quantize_layers
    except ImportError as e:  # pragma: no cover - only while the solver is being built
        raise ImportError(f"the solver API is not available in matgptq.quant ({e})") from None
    return HessianAccumulator, quantize_layer, quantize_layers


def check_model(model: nn.Module, config: QuantConfig, skip: tuple[str, ...] = ()) -> tuple[str, nn.ModuleList]:
    """Everything that can be checked before long work: blocks found, linears present, shapes."""
    prefix, blocks = find_blocks(model)
    for k, block in enumerate(blocks):
        linears = find_linears(block, skip)
        if not linears:
            raise ValueError(f"block {prefix}.{k} has no nn.Linear to quantize (skip={skip})")
        for name, lin in linears.items():
            try:
                config.check_shape(lin.in_features)
            except ValueError as e:
                raise ValueError(f"{prefix}.{k}.{name}: {e}") from None
    return prefix, blocks


def fake_quantize_(linears: dict[str, nn.Linear], qws: BlockResult, bits: int | None = None) -> None:
    """Replace each linear's weight by its dequantized weight (in the weight's own dtype)."""
    for name, qw in qws.items():
        w = linears[name].weight
        w.data = qw.to(w.device).dequantize(bits).to(w.dtype)


def _run_block(block, hidden, args, kwargs, out=None):
    """Run ``block`` on each sequence of ``hidden`` [n, seq, d]; write into ``out`` if given."""
    dev = next(block.parameters()).device
    for i in range(hidden.shape[0]):
        y = block(hidden[i : i + 1].to(dev), *args, **kwargs)
        if isinstance(y, (tuple, list)):
            y = y[0]
        if out is not None:
            out[i : i + 1] = y.to(out.device)


@torch.no_grad()
def quantize_blocks(
    model: nn.Module,
    input_ids: torch.Tensor,
    config: QuantConfig,
    *,
    device: torch.device | str = "cpu",
    skip: tuple[str, ...] = (),
    finished: dict[int, BlockResult] | None = None,
    on_block: Callable[[int, BlockResult], None] | None = None,
    offload_activations: bool = False,
    progress: bool = True,
) -> dict[str, QuantizedWeight]:
    """Quantize every decoder block of ``model`` in place (fake-quantized at master precision).

    ``finished`` maps block index -> results already on disk (resume): those blocks are not
    solved again, only replayed to propagate activations. ``on_block(k, result)`` is called after
    each newly solved block. Returns {full module name: QuantizedWeight (on CPU)}.
    """
    HessianAccumulator, quantize_layer, quantize_layers = _solver()
    device = torch.device(device)
    finished = finished or {}
    prefix, blocks = check_model(model, config, skip)
    act_device = torch.device("cpu") if offload_activations else device
    t0 = time.time()
    inputs = capture_inputs(model, blocks, input_ids, device=_input_device(model), store_device=act_device)
    log.info(
        "captured inputs of %d sequences x %d tokens in %.1fs", input_ids.shape[0], input_ids.shape[1], time.time() - t0
    )
    hidden = inputs.hidden
    buffer = torch.empty_like(hidden)
    results: dict[str, QuantizedWeight] = {}
    need_h = config.method != "rtn"
    bar = tqdm(range(len(blocks)), desc="quantizing blocks", unit="block", disable=not progress)
    for k in bar:
        block = blocks[k]
        home = next(block.parameters()).device
        block.to(device)
        args = to_device(inputs.args[k], device)
        kwargs = to_device(inputs.kwargs[k], device)
        linears = find_linears(block, skip)
        if k in finished:
            qws = finished[k]
            log.info("block %d: restored from the partial checkpoint", k)
        else:
            qws = _solve_block(k, block, linears, hidden, args, kwargs, config, device, need_h,
                               HessianAccumulator, quantize_layer, quantize_layers)
        fake_quantize_(linears, qws)
        _run_block(block, hidden, args, kwargs, out=buffer)
        hidden, buffer = buffer, hidden
        block.to(home)
        for name, qw in qws.items():
            results[f"{prefix}.{k}.{name}"] = qw
        if k not in finished and on_block is not None:
            on_block(k, qws)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        loss = sum(qw.stats.loss for qw in qws.values())
        bar.set_postfix(loss=f"{loss:.4g}")
    return results


def _solve_block(k, block, linears, hidden, args, kwargs, config, device, need_h,
                 HessianAccumulator, quantize_layer, quantize_layers) -> BlockResult:
    t = time.time()
    if need_h:
        hooks = HessianHooks(linears, lambda c: HessianAccumulator(c, device=device))
        with hooks:
            for i in range(hidden.shape[0]):
                _run_block(block, hidden[i : i + 1], args, kwargs)
                hooks.end_forward()
        groups = hooks.groups
    else:
        hooks, groups = None, [[n] for n in linears]
    t_h = time.time() - t
    qws: BlockResult = {}
    for group in groups:
        ws = [linears[n].weight.data for n in group]
        acc = hooks.accumulator(group[0]) if hooks else None  # RTN needs no Hessian
        t1 = time.time()
        res = quantize_layers(ws, acc, config) if len(group) > 1 else [quantize_layer(ws[0], acc, config)]
        for name, qw in zip(group, res):
            qws[name] = qw.to("cpu")
            s = qw.stats
            log.info(
                "block %d %-24s %5dx%-5d loss %.5g damp %.3g%s (%.2fs)", k, name, *qw.shape, s.loss,
                s.damp, f" retries {s.damp_retries}" if s.damp_retries else "", time.time() - t1,
            )
        if hooks:
            hooks.accs.pop(group[0], None)
    log.info("block %d: Hessians %.1fs, total %.1fs", k, t_h, time.time() - t)
    return {n: qws[n] for n in linears}


def _input_device(model: nn.Module) -> torch.device:
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is not None:
        return emb.weight.device
    return next(model.parameters()).device
