"""The public API: `optimize(model, prune=..., lowrank=..., quantize=..., calibration=...) -> Result`.

The passes run in the order of `onnxslim.passes.PASSES` (cleanup -> prune -> low-rank -> quantize: last, it
needs the final weights), each when configured (cleanup always), with what each requires of the graph
provided first (onnxslim.protocol); then the result is validated against the original in onnxruntime.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import onnx

from . import check, ondisk, runshapes
from . import inputs as inputs_mod
from .calibration import Dataset, load_calibration
from .context import Context
from .datacheck import check_data as check_dataset
from .errors import FIDELITY_FAILED, SlimError, ValidationSkipped
from .graph import fits_protobuf, load_model, model_bytes
from .labels import load_labels
from .layer_table import compare_layers
from .options import check_options
from .passes import PASSES
from .passes.cleanup import CleanupConfig
from .progress import progress as default_progress
from .protocol import INITIAL
from .runshapes import RunShapes
from .validate import compare_models

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
             labels=None, check_data: bool = True, warn=_stderr_warning, configs: dict | None = None,
             passes=None) -> Result:
    """Optimize `model` (a path or an onnx.ModelProto). A path's external weights stay on disk while the
    passes and the validation run (onnxslim.ondisk) and are read into the returned model at the end.

    passes: the pass list (default `onnxslim.passes.PASSES`); configs: {pass name: its config, or None to
    leave it out}. prune / lowrank / quantize: shorthands for configs["prune"] etc. (PruneConfig,
    LowRankConfig, QuantizeConfig); size_threshold / fp16: for cleanup's config when configs has none.
    calibration: an `onnxslim.calibration.Dataset`, a path (image folder, .npy/.npz), or None.
    data: validation inputs: a Dataset, an image folder or .npy/.npz path (else random inputs from the input
    shapes); its first `val_size` samples are used. labels: a `--labels` file (labels.py); without it, labels
    come from class sub-folders or a `labels` array in the .npz, and add top-1/top-5 accuracy to the report.
    check_data: check real calibration and validation data first (datacheck.py: degenerate inputs stop
    with a SlimError); `warn(message)` receives the checks' warnings.
    min_cosine: raise SlimError (exit code 1) when any output's mean cosine similarity falls below it.
    threads: onnxruntime threads for the timings (None: its default for validation, 1 for the profile).
    shape_hints: {input: (source, shape)} for dynamic dims (a preprocess file's crop; runshapes.choose).
    """
    started = time.perf_counter()
    check_options({"min_cosine": min_cosine, "seed": seed, "threads": threads, "val_size": val_size})
    passes = PASSES if passes is None else tuple(passes)
    configs = {"prune": prune, "lowrank": lowrank, "quantize": quantize, **(configs or {})}
    configs.setdefault("cleanup", CleanupConfig(size_threshold=size_threshold, fp16=fp16))
    steps = schedule(passes, configs)
    edits = any(not p.always for p, _ in steps)  # a pass beyond the lossless cleanup
    input_shapes = dict(input_shapes or {})
    original = _load(model, edits, input_shapes)
    if not all(p.weights_on_disk(c) for p, c in steps):
        ondisk.materialize(original)  # a pass that reads and writes weights in the proto
    if isinstance(calibration, (str, Path)):
        calibration = load_calibration(calibration, original, input_shapes=input_shapes, seed=seed)
    val = _validation_data(data, original, input_shapes, val_size, labels, seed) if validate else (None, None)
    run = _shapes_for_run(original, input_shapes, val[0], calibration, shape_hints, validate, edits)
    if (validate or edits) and run.shapes:  # memory and window sizes at the run shapes, before any pass runs the model
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

    current, normalized = run_steps(original, steps, ctx, report)
    _check_valid(current)
    if any(p.changes_layers for p, _ in steps):  # the passes that change layer widths and MACs (~1 s on MiniLM)
        report["layers"] = compare_layers(normalized, current, input_shapes or None)
    if validate:
        report["validation"] = _validation(original, current, normalized, val, run, latency, progress,
                                           seed, threads, min_cosine)
    return _result(model, original, current, report, started)


def _result(given, original, current, report: dict, started: float) -> Result:
    report["model_stats"] = {key: [f(original), f(current)] for key, f in _MODEL_STATS.items()}
    report["seconds"] = round(time.perf_counter() - started, 2)
    if isinstance(given, (str, Path)):  # a self-contained model for the caller: no reference to a file of ours
        ondisk.materialize(current)
    return Result(current, report)


def _load(model, edits: bool, input_shapes: dict) -> onnx.ModelProto:
    """The model from a path or the caller's proto, with the same checks either way."""
    if isinstance(model, (str, Path)):
        # weights on disk while the passes and the validation run (onnxslim.ondisk), read in at the end
        original = load_model(model, lazy=True)
    else:
        original = model
        check.check_model(original)  # a proto from the caller: the same checks as a file gets
    if edits:
        check.check_tensor_io(original, "pruning, low-rank and quantization")
    if input_shapes:
        inputs_mod.check_overrides(original, input_shapes)  # names and fixed dims; dynamic dims need no size here
    return original


def schedule(passes, configs: dict) -> list:
    """[(pass, config)]: the passes of the list that are on (configured, or `always`), each config adjusted to
    what the later ones require. A requirement missing before a pass is checked here, before any work: a
    pass that provides it runs first (at run time, `run_steps`), or the pass that took it away says why."""
    unknown = sorted(set(k for k, v in configs.items() if v is not None) - {p.name for p in passes})
    if unknown:
        raise SlimError(f"no pass named {', '.join(unknown)}")
    steps = [(p, configs.get(p.name) or p.default_config()) for p in passes
             if p.always or configs.get(p.name) is not None]
    steps = [(p, p.configure(c, set().union(*(q.requires(qc) for q, qc in steps[i + 1:]))))
             for i, (p, c) in enumerate(steps)]
    state, taken = set(INITIAL), {}
    for i, (p, c) in enumerate(steps):
        missing = p.requires(c) - state
        if missing and _provider(passes, missing) is None:
            by, by_config = taken.get(sorted(missing)[0], (p, c))
            later = [q.name for q, qc in steps[i:] if missing & q.requires(qc)]
            raise SlimError(by.lost(by_config, missing, later))
        state |= p.requires(c)
        kept = p.preserves(c)
        taken.update({prop: (p, c) for prop in state - kept})
        state = (state & kept) | p.provides(c)
    return steps


def _provider(passes, missing: set):
    return next((p for p in passes if missing <= p.provides(p.default_config())), None)


def run_steps(model: onnx.ModelProto, steps: list, ctx: Context, report: dict):
    """Run the scheduled passes; (the result, the model after the `always` passes: what the others started
    from). A pass whose requirement an earlier pass's change took away gets its provider run first
    (with its default config, unreported: as if the pass had prepared the graph itself)."""
    state, current, normalized = set(INITIAL), model, model
    passes = [p for p, _ in steps] + list(PASSES)  # providers: the scheduled passes first, then the standard ones
    for p, config in steps:
        missing = p.requires(config) - state
        if missing:
            provider = _provider(passes, missing)
            current = provider.run(current, provider.default_config(), ctx).model
            state |= provider.provides(provider.default_config())
        current, modified = _timed(report, p.name, lambda: p.run(current, config, ctx))
        state = (state & p.preserves(config) if modified else state) | p.provides(config)
        if p.always:
            normalized = current
    return current, normalized


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
    return result.model, result.modified


def _shapes_for_run(original, input_shapes, data, calibration, shape_hints, validate: bool, edits: bool) -> RunShapes:
    # only a step that runs the model needs concrete shapes: a bare --no-validate run never searches
    probe = validate or edits
    try:
        return _run_shapes(original, input_shapes, data, calibration, shape_hints, probe)
    except SlimError as err:
        if input_shapes or data is not None or calibration is not None or not probe or edits:
            raise
        # inputs no one can feed (optional, sequence): the lossless path needs none, only validation is skipped
        return RunShapes(None, reason=str(err))


def _check_valid(model: onnx.ModelProto) -> None:
    try:
        if fits_protobuf(model):  # weights on disk count for nothing here (the checker reads none)
            check.check_tensors(model)  # the byte counts; the checker leaves large weights out
            ondisk.check_onnx(model)
    except onnx.checker.ValidationError as err:
        first = str(err).strip().splitlines()[0]
        raise SlimError(f"internal error: the optimized model fails onnx.checker ({first}); nothing written") from None


def _validation_data(data, original, input_shapes, val_size, labels, seed):
    """(Dataset or None for random inputs, labels array or None)."""
    if data is None:
        if labels is not None:
            raise SlimError("--labels needs --data")
        return None, None
    dataset = data if isinstance(data, Dataset) else load_calibration(data, original, size=val_size, input_shapes=input_shapes, seed=seed)
    if len(dataset) > val_size and hasattr(dataset, "take"):
        dataset = dataset.take(0, val_size)
    return dataset, load_labels(labels, dataset, getattr(dataset, "path", None))


def _check_data(original, calibration, val, report, warn) -> None:
    warnings = []
    if calibration is not None and calibration.real:
        warnings += check_dataset(original, calibration, "--calib")
    if val[0] is not None and val[0].real:
        warnings += check_dataset(original, val[0], "--data")
    for w in warnings:
        warn(w)
    if warnings:
        report["data_warnings"] = warnings


def _run_shapes(original, input_shapes, data, calibration, shape_hints, probe: bool):
    """runshapes.choose with the hints of --input-shape, then --data, --calib, the caller's `shape_hints`."""
    hints = {}
    for dataset, label in ((data, "--data"), (calibration, None)):
        for name, (source, shape) in ((dataset.shape_hints() or {}) if dataset is not None else {}).items():
            hints.setdefault(name, (label or source, shape))
    for name, (source, shape) in (shape_hints or {}).items():
        hints.setdefault(name, (source, shape))
    return runshapes.choose(original, input_shapes, hints, probe=probe)


def _validate(original, optimized, normalized, val, run, latency, progress, seed, threads=None) -> dict:
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
