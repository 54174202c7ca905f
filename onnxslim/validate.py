"""Original vs optimized model in onnxruntime: output fidelity, MACs, params, size and latency.

`compare_models` builds the validation report (the sessions and timers are runtime.py's, the output metrics
metrics.py's); validation_table.format_report_table prints it as a short table.
"""
from __future__ import annotations

import numpy as np
import onnx

from . import cost
from .errors import SlimError, ValidationSkipped
from .graph import model_bytes
from .inputs import check_run_memory, model_inputs
from .metrics import compare_outputs
from .progress import silent
from .runtime import median_latency, paired_latency, run, session


# Paired timing keeps both models' sessions (each about its model's weights) at once; past this many bytes of
# the two models together each is timed alone, so validation holds one model at a time (issue 14: the bare
# command on a 4 GB model within 2x its size). Models of about 1 GB and less are still timed in pairs.
PAIRED_MAX_BYTES = 2 * 2**30


# -- the report ---------------------------------------------------------------------------------------

def _io_names(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits], [o.name for o in model.graph.output]


def check_same_io(original: onnx.ModelProto, optimized: onnx.ModelProto) -> None:
    """The optimized model must be a drop-in replacement: the same input and output names."""
    (in_a, out_a), (in_b, out_b) = _io_names(original), _io_names(optimized)
    if set(in_a) != set(in_b):
        raise SlimError(f"the optimized model's inputs {sorted(in_b)} differ from the original's {sorted(in_a)}")
    if set(out_a) != set(out_b):
        raise SlimError(f"the optimized model's outputs {sorted(out_b)} differ from the original's {sorted(out_a)}")


def _ratio(before, after):
    if before is None or after is None or not before:
        return None
    return after / before


def _cost_shapes(model: onnx.ModelProto, feeds: list[dict], input_shapes: dict | None) -> dict | None:
    """Shapes for MACs: the given ones, else the feeds' shapes with a dynamic batch dim set to 1."""
    if input_shapes or not feeds:
        return input_shapes
    shapes = {}
    for spec in model_inputs(model):
        if spec.name in feeds[0]:
            shape = list(np.shape(feeds[0][spec.name]))
            if shape and spec.shape and not (isinstance(spec.shape[0], int) and spec.shape[0] > 0):
                shape[0] = 1
            shapes[spec.name] = tuple(shape)
    return shapes


def _cost_sections(before_model: onnx.ModelProto, after_model: onnx.ModelProto, shapes: dict | None) -> dict:
    """The "macs" and "params" sections: before, after, ratio; nodes of unknown shape and errors noted."""
    costs = []
    for model in (before_model, after_model):
        try:
            costs.append(cost.model_cost(model, shapes))
        except SlimError as err:
            costs.append({"error": str(err)})
    report = {}
    for key in ("macs", "params"):
        before, after = costs[0].get(key), costs[1].get(key)
        section = {"before": before, "after": after, "ratio": _ratio(before, after)}
        if key == "macs":
            unknown = [len(c.get("unknown_macs_nodes", [])) for c in costs]
            if any(unknown):
                section["unknown_nodes"] = {"before": unknown[0], "after": unknown[1]}
        errors = [c["error"] for c in costs if "error" in c]
        if errors:
            section["error"] = errors[0]
        report[key] = section
    return report


def compare_models(original: onnx.ModelProto, optimized: onnx.ModelProto, feeds: list[dict], *,
                   input_shapes: dict | None = None, latency: bool = True, progress=None,
                   latency_budget_s: float = 10.0, threads: int | None = None,
                   cost_reference: onnx.ModelProto | None = None, labels=None) -> dict:
    """The validation report of `optimized` against `original` on `feeds` (a list of feed dicts).

    {"macs": {"before", "after", "ratio"}, "params": {...}, "size_bytes": {...},
     "latency_ms": {"before", "after", "ratio", "ratio_iqr", "runs"} (only if `latency`; both models timed
     in alternating blocks on feeds[0], see paired_latency; past PAIRED_MAX_BYTES {"before", "after",
     "ratio", "timing": "sequential"}: each timed alone), "outputs": compare_outputs(...)}.
    Ratios are after / before. MACs are at batch 1 unless `input_shapes` say otherwise. `cost_reference` (an equivalent, normalized copy of the original) is what
    the "before" MACs/params are counted on when given: shape inference sees more of it. `labels` (ints, one
    per sample of `feeds`) add top1_accuracy / top5_accuracy sections (see label_accuracy).
    Raises SlimError if the optimized model's input/output names differ.
    """
    check_same_io(original, optimized)
    if not feeds:
        raise SlimError("no input data to validate with")
    progress = progress or silent
    report = _cost_sections(cost_reference or original, optimized, _cost_shapes(original, feeds, input_shapes))
    size = model_bytes(original), model_bytes(optimized)
    report["size_bytes"] = {"before": size[0], "after": size[1], "ratio": _ratio(*size)}

    check_run_memory(original, {name: np.shape(value) for name, value in feeds[0].items()})  # before onnxruntime
    paired = latency and sum(size) <= PAIRED_MAX_BYTES
    timer = _Timer(feeds[0], latency_budget_s, progress)
    try:  # the original must run for a comparison to mean anything (custom domains, unfeedable types)
        sess_a = session(original, threads=threads)
        ref = [run(sess_a, [feed])[0] for feed in feeds]
    except SlimError as err:
        raise ValidationSkipped(f"the original model: {err}") from None
    if not paired:  # one session at a time: each holds its model's weights
        if latency:
            timer.alone(sess_a)
        del sess_a
    sess_b = session(optimized, threads=threads)
    new = run(sess_b, feeds, progress=progress, label="validating")
    report["outputs"] = compare_outputs(ref, new)
    if labels is not None:
        from .labels import label_accuracy  # noqa: PLC0415 - labels reads output kinds; only labelled runs need it
        report.update(label_accuracy(ref, new, labels))
    if latency:
        report["latency_ms"] = timer.paired(sess_a, sess_b) if paired else timer.alone(sess_b)
    return report


class _Timer:
    """The latency section: both sessions timed in alternating blocks (`paired`), or, for models too large
    to hold both sessions at once (PAIRED_MAX_BYTES), each timed alone, the original first (`alone`, called
    once per session; the second call returns the section, marked `"timing": "sequential"`)."""

    def __init__(self, feed: dict, budget_s: float, progress):
        self.feed, self.budget_s, self.progress, self.before = feed, budget_s, progress, None

    def paired(self, sess_a, sess_b) -> dict:
        with self.progress("timing", total=None):
            before, after, runs, spread = paired_latency(sess_a, sess_b, self.feed, budget_s=self.budget_s)
        return {"before": before * 1e3, "after": after * 1e3, "ratio": _ratio(before, after),
                "ratio_iqr": [round(spread[0], 4), round(spread[1], 4)], "runs": runs}

    def alone(self, sess) -> dict | None:
        with self.progress("timing", total=None):
            seconds = median_latency(sess, self.feed, budget_s=self.budget_s / 2)
        if self.before is None:
            self.before = seconds
            return None
        return {"before": self.before * 1e3, "after": seconds * 1e3, "ratio": _ratio(self.before, seconds),
                "timing": "sequential"}
