"""The public API: `optimize(model, prune=..., lowrank=..., quantize=..., calibration=...) -> Result`.

Order: cleanup (normalize) -> prune -> low-rank -> quantize (last: it needs the final weights) -> validate
against the original model in onnxruntime.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import onnx

from . import check
from . import inputs as inputs_mod
from .context import Context
from .errors import FIDELITY_FAILED, SlimError, ValidationSkipped
from .graph import TWO_GB, load_model, model_bytes
from .runshapes import RunShapes
from .options import check_options
from .progress import progress as default_progress

VALIDATION_SAMPLES = 64  # samples of --data used to compare outputs (all, if fewer); --val-size


def _stderr_warning(message: str) -> None:
    print(f"onnxslim: warning: {message}", file=sys.stderr)


@dataclass
class Result:
    model: onnx.ModelProto
    report: dict


def optimize(model, *, prune=None, lowrank=None, quantize=None, calibration=None, data=None,
             input_shapes: dict | None = None, validate: bool = True, latency: bool = True,
             min_cosine: float | None = None, progress=default_progress, seed: int = 0,
             threads: int | None = None, shape_hints: dict | None = None,
             size_threshold: int | None = None, fp16: bool = False, val_size: int = VALIDATION_SAMPLES,
             labels=None, check_data: bool = True, warn=_stderr_warning) -> Result:
    """Optimize `model` (a path or an onnx.ModelProto).

    prune / lowrank / quantize: the passes' config dataclasses (PruneConfig, LowRankConfig, QuantizeConfig)
    or None. calibration: an `onnxslim.calibration.Dataset`, a path (image folder, .npy/.npz), or None.
    data: validation inputs: a Dataset, an image folder or .npy/.npz path (else random inputs from the input
    shapes); its first `val_size` samples are used. labels: a `--labels` file (labels.py); without it, labels
    come from class sub-folders or a `labels` array in the .npz, and add top-1/top-5 accuracy to the report.
    check_data: check real calibration and validation data first (datacheck.py: degenerate inputs stop
    with a SlimError); `warn(message)` receives the checks' warnings.
    min_cosine: raise SlimError (exit code 1) when any output's mean cosine similarity falls below it.
    threads: onnxruntime intra-op threads for the latency measurements (validation, --target-latency's
    profile); None = onnxruntime's default for validation, 1 for the profile.
    Dynamic dims need no size: the steps that run the model use the shapes `runshapes.choose` finds
    (input_shapes, then data / calibration arrays, then `shape_hints` {input: (source, shape)} such as a
    preprocess file's crop, then sizes the original runs with).
    size_threshold: bytes; constant folding never materializes a larger tensor (None: see CleanupConfig).
    fp16: float16 weights and compute (lossless path only: the other passes work on float32 weights).
    """
    started = time.perf_counter()
    check_options({"min_cosine": min_cosine, "seed": seed})
    if isinstance(model, (str, Path)):
        original = load_model(model)
    else:
        original = model
        check.check_model(original)  # a proto from the caller: the same checks as a file gets
    if any(p is not None for p in (prune, lowrank, quantize)):
        check.check_tensor_io(original, "pruning, low-rank and quantization")
    input_shapes = dict(input_shapes or {})
    if input_shapes:
        inputs_mod.check_overrides(original, input_shapes)  # names and fixed dims; dynamic dims need no size here
    if isinstance(calibration, (str, Path)):
        from .calibration import load_calibration
        calibration = load_calibration(calibration, original, input_shapes=input_shapes, seed=seed)
    if threads is not None and threads < 1:
        raise SlimError(f"--threads {threads}: give at least 1")
    if val_size < 1:
        raise SlimError(f"--val-size {val_size}: give at least 1")
    val = _validation_data(data, original, input_shapes, val_size, labels, seed) if validate else (None, None)
    # only a step that runs the model needs concrete shapes: a bare --no-validate run never searches
    run_needed = validate or any(p is not None for p in (prune, lowrank, quantize))
    try:
        run = _run_shapes(original, input_shapes, val[0], calibration, shape_hints, run_needed)
    except SlimError as err:
        if input_shapes or val[0] is not None or calibration is not None or not run_needed \
                or any(p is not None for p in (prune, lowrank, quantize)):
            raise
        # inputs no one can feed (optional, sequence): the lossless path needs none, only validation is skipped
        run = RunShapes(None, reason=str(err))
    if run_needed and run.shapes:  # memory and window sizes at the run shapes, before any pass runs the model
        inputs_mod.check_run_memory(original, run.shapes, count=4 if validate and val[0] is None else 1)
    for dataset in (calibration, val[0]):
        if dataset is not None:
            dataset.bind(run.shapes)
    ctx = Context(calibration=calibration, input_shapes=run.shapes or input_shapes, progress=progress, seed=seed, threads=threads)
    report: dict = {"passes": {}}
    if calibration is not None:
        report["calibration"] = calibration.describe()
    if check_data:
        _check_data(original, calibration, val, report, warn)

    from onnxslim.passes import cleanup
    keep_bn = prune is not None and getattr(prune, "importance", None) == "bn"
    if fp16 and (prune is not None or lowrank is not None or quantize is not None):
        raise SlimError("--fp16 works on the lossless path only; drop --prune/--target-macs/--lowrank/--quantize")
    config = cleanup.CleanupConfig(fold_bn=not keep_bn, size_threshold=size_threshold, fp16=fp16)
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
        report["validation"] = _validation(original, current, normalized, val, run, latency, progress,
                                           seed, threads, min_cosine)
    report["model_stats"] = {key: [f(original), f(current)] for key, f in _MODEL_STATS.items()}
    report["seconds"] = round(time.perf_counter() - started, 2)
    return Result(current, report)


# before/after counts the terminal summary prints for every run
_MODEL_STATS = {"nodes": lambda m: len(m.graph.node), "initializers": lambda m: len(m.graph.initializer),
                "bytes": model_bytes}


def _validation(original, current, normalized, data, run, latency, progress, seed, threads, min_cosine) -> dict:
    """The validation section; {"skipped": reason} when it cannot run (no inputs can be made, or onnxruntime
    cannot run the original), which fails the run only when --min-cosine asks for validation."""
    try:
        section = _validate(original, current, normalized, data, run, latency, progress, seed, threads)
    except ValidationSkipped as err:
        if min_cosine is not None:
            raise SlimError(f"--min-cosine asks for validation, which was skipped: {err}; nothing written",
                            exit_code=FIDELITY_FAILED) from None
        return {"skipped": str(err), "input_shapes": {}}
    if min_cosine is not None:
        worst = min((o["cosine"] for o in section["outputs"].values()), default=1.0)
        if worst < min_cosine:
            raise SlimError(f"fidelity check failed: output cosine similarity {worst:.4f} < --min-cosine {min_cosine:g}; nothing written",
                            exit_code=FIDELITY_FAILED)
    return section


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


def _validation_data(data, original, input_shapes, val_size, labels, seed):
    """(Dataset or None for random inputs, labels array or None)."""
    from .calibration import Dataset, load_calibration
    from .labels import load_labels
    if data is None:
        if labels is not None:
            raise SlimError("--labels needs --data")
        return None, None
    dataset = data if isinstance(data, Dataset) else load_calibration(data, original, size=val_size, input_shapes=input_shapes, seed=seed)
    if len(dataset) > val_size and hasattr(dataset, "take"):
        dataset = dataset.take(0, val_size)
    return dataset, load_labels(labels, dataset, getattr(dataset, "path", None))


def _check_data(original, calibration, val, report, warn) -> None:
    from .datacheck import check_data
    warnings = []
    if calibration is not None and calibration.real:
        warnings += check_data(original, calibration, "--calib")
    if val[0] is not None and val[0].real:
        warnings += check_data(original, val[0], "--data")
    for w in warnings:
        warn(w)
    if warnings:
        report["data_warnings"] = warnings


def _run_shapes(original, input_shapes, data, calibration, shape_hints, probe: bool):
    """runshapes.choose with the hints of --input-shape, then --data, --calib, the caller's `shape_hints`."""
    from . import runshapes
    hints = {}
    for dataset, label in ((data, "--data"), (calibration, None)):
        for name, (source, shape) in ((dataset.shape_hints() or {}) if dataset is not None else {}).items():
            hints.setdefault(name, (label or source, shape))
    for name, (source, shape) in (shape_hints or {}).items():
        hints.setdefault(name, (source, shape))
    return runshapes.choose(original, input_shapes, hints, probe=probe)


def _validate(original, optimized, normalized, val, run, latency, progress, seed, threads=None) -> dict:
    from .validate import compare_models
    dataset, labels = val
    if dataset is not None:
        feeds = list(dataset.batches(8))
        source = dataset.source + (f" ({len(dataset)} samples" + (", labelled)" if labels is not None else ")"))
        used = {k: {"shape": list(v.shape), "source": "--data"} for k, v in feeds[0].items()}
    elif run.shapes is None:
        raise ValidationSkipped(f"no input shape the model runs with: {run.reason}; give --input-shape")
    else:
        try:
            feeds = inputs_mod.random_feeds(original, run.shapes, count=4, seed=seed)
        except SlimError as err:
            raise ValidationSkipped(f"no inputs to validate with: {err}") from None
        source = ("random inputs (4 batches): this checks that the model still computes the same structure, "
                  "not accuracy; give --data (and --labels) for real inputs")
        used = run.report()
    # MACs at the run shapes; with --data, at its shapes with the batch dim as 1 (compare_models' default)
    report = compare_models(original, optimized, feeds, input_shapes=None if dataset is not None else run.shapes,
                            latency=latency, progress=progress, cost_reference=normalized, threads=threads, labels=labels)
    report["data"] = source
    report["real_data"] = dataset is not None
    report["input_shapes"] = used
    return report
