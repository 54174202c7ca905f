"""The public API: `optimize(model, prune=..., lowrank=..., quantize=..., calibration=...) -> Result`.

Order: cleanup (normalize) -> prune -> low-rank -> quantize (last: it needs the final weights) -> validate
against the original model in onnxruntime.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import onnx

from . import inputs as inputs_mod
from .context import Context
from .errors import FIDELITY_FAILED, SlimError
from .graph import TWO_GB, load_model, model_bytes
from .progress import progress as default_progress

VALIDATION_SAMPLES = 64  # samples of --data used to compare outputs (all, if fewer)


@dataclass
class Result:
    model: onnx.ModelProto
    report: dict


def optimize(model, *, prune=None, lowrank=None, quantize=None, calibration=None, data=None,
             input_shapes: dict | None = None, validate: bool = True, latency: bool = True,
             min_cosine: float | None = None, progress=default_progress, seed: int = 0,
             threads: int | None = None, fp16: bool = False) -> Result:
    """Optimize `model` (a path or an onnx.ModelProto).

    prune / lowrank / quantize: the passes' config dataclasses (PruneConfig, LowRankConfig, QuantizeConfig)
    or None. calibration: an `onnxslim.calibration.Dataset`, a path (image folder, .npy/.npz), or None.
    data: .npy/.npz path with validation inputs (else random inputs from the input shapes).
    min_cosine: raise SlimError (exit code 1) when any output's mean cosine similarity falls below it.
    threads: onnxruntime intra-op threads for the latency measurements (validation, --target-latency's
    profile); None = onnxruntime's default for validation, 1 for the profile.
    fp16: float16 weights and compute (lossless path only: the other passes work on float32 weights).
    """
    started = time.perf_counter()
    original = load_model(model) if isinstance(model, (str, Path)) else model
    input_shapes = dict(input_shapes or {})
    inputs_mod.resolve_shapes(original, input_shapes)  # fails early, with a hint, on unresolvable dims
    if isinstance(calibration, (str, Path)):
        from .calibration import load_calibration
        calibration = load_calibration(calibration, original, input_shapes=input_shapes, seed=seed)
    if threads is not None and threads < 1:
        raise SlimError(f"--threads {threads}: give at least 1")
    ctx = Context(calibration=calibration, input_shapes=input_shapes, progress=progress, seed=seed, threads=threads)
    report: dict = {"passes": {}}

    from onnxslim.passes import cleanup
    keep_bn = prune is not None and getattr(prune, "importance", None) == "bn"
    if fp16 and (prune is not None or lowrank is not None or quantize is not None):
        raise SlimError("--fp16 works on the lossless path only; drop --prune/--target-macs/--lowrank/--quantize")
    config = cleanup.CleanupConfig(fold_bn=not keep_bn, fp16=fp16)
    current = _timed(report, "cleanup", lambda: cleanup.run(original, config, ctx))
    normalized = current
    if prune is not None:
        from onnxslim.passes import prune as prune_pass
        current = _timed(report, "prune", lambda: prune_pass.run(current, prune, ctx))
    if lowrank is not None:
        from onnxslim.passes import lowrank as lowrank_pass
        current = _timed(report, "lowrank", lambda: lowrank_pass.run(current, lowrank, ctx))
    if quantize is not None:
        from onnxslim.passes import quantize as quantize_pass
        current = _timed(report, "quantize", lambda: quantize_pass.run(current, quantize, ctx))
    _check_valid(current)
    if prune is not None or lowrank is not None:  # the passes that change layer widths and MACs (~1 s on MiniLM)
        from .layer_table import compare_layers
        report["layers"] = compare_layers(normalized, current, input_shapes or None)
    if validate:
        report["validation"] = _validate(original, current, normalized, data, input_shapes, latency, progress, seed, threads)
        if min_cosine is not None:
            worst = min((o["cosine"] for o in report["validation"]["outputs"].values()), default=1.0)
            if worst < min_cosine:
                raise SlimError(f"fidelity check failed: output cosine similarity {worst:.4f} < --min-cosine {min_cosine:g}; nothing written",
                                exit_code=FIDELITY_FAILED)
    report["seconds"] = round(time.perf_counter() - started, 2)
    return Result(current, report)


def _timed(report: dict, name: str, step):
    start = time.perf_counter()
    result = step()
    result.report["seconds"] = round(time.perf_counter() - start, 2)
    report["passes"][name] = result.report
    return result.model


def _check_valid(model: onnx.ModelProto) -> None:
    try:
        if model_bytes(model) < TWO_GB:
            onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        first = str(err).strip().splitlines()[0]
        raise SlimError(f"internal error: the optimized model fails onnx.checker ({first}); nothing written") from None


def _validate(original, optimized, normalized, data, input_shapes, latency, progress, seed, threads=None) -> dict:
    from .validate import compare_models
    if data is not None:
        arrays = inputs_mod.load_arrays(data, original)
        feeds = inputs_mod.batched(arrays, 8, limit=VALIDATION_SAMPLES)
        source = f"{Path(data).name} ({min(VALIDATION_SAMPLES, len(next(iter(arrays.values()))))} samples)"
    else:
        feeds = inputs_mod.random_feeds(original, input_shapes, count=4, seed=seed)
        source = "random inputs (4 batches); give --data for real inputs"
    report = compare_models(original, optimized, feeds, input_shapes=input_shapes or None, latency=latency,
                            progress=progress, cost_reference=normalized, threads=threads)
    report["data"] = source
    return report
