"""Original vs optimized model in onnxruntime: output fidelity, MACs, params, size and latency.

`compare_models` builds the validation report; `format_report_table` prints it as a short table.
"""
from __future__ import annotations

import math
import os
import statistics
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort

from . import cost
from .errors import FIDELITY_FAILED, SlimError, ValidationSkipped
from .graph import TWO_GB, model_bytes
from .inputs import model_inputs
from .output_values import as_match as _as_match, comparable as _comparable
from .progress import silent

# SQNR of an exact match would be +inf, which is not JSON; float64 rounding noise sits near 300 dB anyway
_SQNR_CAP_DB = 300.0
# tensors at least this large go to the external data file when a model must be saved for onnxruntime
_EXTERNAL_MIN_BYTES = 1024


# -- sessions and runs --------------------------------------------------------------------------------

def session(model: onnx.ModelProto, *, threads: int | None = None, basic: bool = False,
            profile_prefix: str | None = None, optimized_path: str | None = None) -> ort.InferenceSession:
    """A CPU onnxruntime session; models over 2 GB go through a temp folder with external data. `basic`:
    only basic graph optimizations (onnxruntime's Conv+Add fusion drops a tapped Conv output whose weight
    is a graph input). `profile_prefix`: write onnxruntime's per-node profile there (end_profiling()).
    `optimized_path`: save the graph onnxruntime runs (after its fusions) there."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # errors come back as exceptions, said in one line; no log lines on stderr
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    if optimized_path:
        opts.optimized_model_filepath = optimized_path
    if basic:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    try:
        if model_size_bytes(model) < TWO_GB:
            return ort.InferenceSession(model.SerializeToString(), opts, providers=providers)
        tmp = tempfile.TemporaryDirectory(prefix="onnxslim-")
        path = _save_external(model, tmp.name)
        sess = ort.InferenceSession(path, opts, providers=providers)
        # the weights may be memory-mapped from the folder: it must live as long as the session
        sess._onnxslim_tmpdir = tmp
        return sess
    except SlimError:
        raise
    except Exception as err:
        raise SlimError(f"onnxruntime cannot load the model: {_first_line(err)}") from None


def model_size_bytes(model: onnx.ModelProto) -> int:
    """Serialized size, also past 2 GB (see graph.model_bytes)."""
    return model_bytes(model)


def _without_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    light = onnx.ModelProto()
    for field, value in model.ListFields():
        if field.name != "graph":
            _copy_field(light, field, value)
    for field, value in model.graph.ListFields():
        if field.name != "initializer":
            _copy_field(light.graph, field, value)
    return light


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _save_external(model: onnx.ModelProto, folder: str, min_bytes: int = _EXTERNAL_MIN_BYTES) -> str:
    """Write the model with its large raw tensors in one data file, without copying the whole proto first."""
    light = _without_initializers(model)
    data_name = "weights.data"
    with open(os.path.join(folder, data_name), "wb") as data:
        for tensor in model.graph.initializer:
            out = light.graph.initializer.add()
            if tensor.HasField("raw_data") and len(tensor.raw_data) >= min_bytes:
                raw = tensor.raw_data
                offset = data.tell()
                data.write(raw)
                data.write(b"\0" * (-len(raw) % 64))  # keep every tensor aligned for mmap
                out.name, out.data_type = tensor.name, tensor.data_type
                out.dims.extend(tensor.dims)
                out.data_location = onnx.TensorProto.EXTERNAL
                for key, val in (("location", data_name), ("offset", str(offset)), ("length", str(len(raw)))):
                    entry = out.external_data.add()
                    entry.key, entry.value = key, val
            else:
                out.CopyFrom(tensor)
    path = os.path.join(folder, "model.onnx")
    if light.ByteSize() >= TWO_GB:
        raise SlimError("the model's graph is over 2 GB even without its initializers (huge Constant nodes?); onnxruntime cannot load it")
    with open(path, "wb") as fh:
        fh.write(light.SerializeToString())
    return path


def _copy_field(dst, field, value) -> None:
    # protobuf's descriptor API moved between versions; the value's own type says what it is
    if hasattr(value, "extend"):
        getattr(dst, field.name).extend(value)
    elif hasattr(value, "CopyFrom"):
        getattr(dst, field.name).CopyFrom(value)
    else:
        setattr(dst, field.name, value)


def _as_session(model_or_session, threads=None) -> ort.InferenceSession:
    if not isinstance(model_or_session, onnx.ModelProto):  # a session (or anything with its run())
        return model_or_session
    return session(model_or_session, threads=threads)


def run(model_or_session, feeds: list[dict], *, progress=None) -> list[dict[str, np.ndarray]]:
    """Outputs per feed: [{output name: array}], one dict per feed dict."""
    sess = _as_session(model_or_session)
    names = [o.name for o in sess.get_outputs()]
    results = []
    with (progress or silent)("running", total=len(feeds)) as bar:
        for feed in feeds:
            try:
                values = sess.run(names, feed)
            except Exception as err:
                raise SlimError(f"onnxruntime failed to run the model: {_first_line(err)}") from None
            results.append(dict(zip(names, values)))
            bar.update(1)
    return results


# -- fidelity -----------------------------------------------------------------------------------------

def compare_outputs(ref: list[dict], new: list[dict]) -> dict[str, dict]:
    """Fidelity of `new` against `ref` (lists of per-batch output dicts), per output name.

    - cosine: per sample (axis 0 of outputs with rank >= 2; the whole array otherwise), over the flattened
      sample, averaged over samples. Two all-zero samples count 1, one all-zero sample against a non-zero
      one counts 0. A sample where the models disagree on non-finite values (NaN/inf) counts 0.
    - max_abs_error, mean_abs_error: over all elements finite in both.
    - sqnr_db: 10 log10(sum ref^2 / sum (ref - new)^2), capped at +-300 dB (an exact match gives 300).
    - top1_agreement: fraction of rows with the same argmax, only for 2-D float outputs [batch, classes].
    - nonfinite_mismatch: number of elements where the two disagree on NaN/inf (only present if > 0).
    """
    if len(ref) != len(new):
        raise SlimError(f"cannot compare outputs of {len(ref)} and {len(new)} batches")
    report = {}
    names = list(ref[0]) if ref else []
    for name in names:
        acc = _Accumulator()
        for i, (r, n) in enumerate(zip(ref, new)):
            if name not in n:
                raise SlimError(f"output '{name}' is missing from the optimized model's results", FIDELITY_FAILED)
            a, b = _comparable(r[name]), _comparable(n[name])
            if a.shape != b.shape:
                raise SlimError(f"output '{name}' has shape {a.shape} in the original but {b.shape} in the optimized model (batch {i})", FIDELITY_FAILED)
            acc.add(*_as_match(a, b))
        report[name] = _with_kind_metrics(acc.result(), name, ref, new)
    return report


class _Accumulator:
    def __init__(self):
        self.cos_sum = 0.0
        self.samples = 0
        self.max_abs = 0.0
        self.abs_sum = 0.0
        self.elements = 0
        self.signal = 0.0
        self.noise = 0.0
        self.top1_same = 0
        self.top1_rows = 0
        self.top1_applies = True
        self.mismatch = 0

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        self.top1_applies &= a.ndim == 2 and a.shape[1] > 1 and np.issubdtype(a.dtype, np.floating)
        if self.top1_applies and a.shape[0]:
            self.top1_same += int(np.sum(np.argmax(a, axis=1) == np.argmax(b, axis=1)))
            self.top1_rows += a.shape[0]
        if a.size == 0:
            return  # an empty output (a zero-sized dim) matches by its shape, already compared
        rows = a.shape[0] if a.ndim >= 2 else 1
        cols = int(np.prod(a.shape[1:])) if a.ndim >= 2 else a.size  # explicit: -1 is ambiguous for 0 rows (no detections)
        x = a.astype(np.float64).reshape(rows, cols)
        y = b.astype(np.float64).reshape(rows, cols)
        finite = np.isfinite(x) & np.isfinite(y)
        # the same inf on both sides is agreement (e.g. -inf attention masks); NaN never is
        bad = ~finite & ~(x == y)
        self.mismatch += int(bad.sum())
        x = np.where(finite, x, 0.0)
        y = np.where(finite, y, 0.0)
        diff = np.abs(x - y)
        if finite.any():
            self.max_abs = max(self.max_abs, float(diff[finite].max()))
        self.abs_sum += float(diff.sum())
        self.elements += int(finite.sum())
        self.signal += float(np.sum(x * x))
        self.noise += float(np.sum(diff * diff))
        nx, ny = np.linalg.norm(x, axis=1), np.linalg.norm(y, axis=1)
        dot = np.sum(x * y, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            cos = np.where((nx > 0) & (ny > 0), dot / (nx * ny), np.where((nx == 0) & (ny == 0), 1.0, 0.0))
        cos = np.clip(cos, -1.0, 1.0)
        cos[bad.any(axis=1)] = 0.0
        self.cos_sum += float(cos.sum())
        self.samples += rows

    def result(self) -> dict:
        if self.noise == 0:
            sqnr = _SQNR_CAP_DB
        elif self.signal == 0:
            sqnr = -_SQNR_CAP_DB
        else:
            sqnr = max(-_SQNR_CAP_DB, min(_SQNR_CAP_DB, 10 * math.log10(self.signal / self.noise)))
        out = {
            "cosine": self.cos_sum / self.samples if self.samples else 1.0,
            "max_abs_error": self.max_abs,
            "mean_abs_error": self.abs_sum / self.elements if self.elements else 0.0,
            "sqnr_db": sqnr,
        }
        if self.top1_applies and self.top1_rows:
            out["top1_agreement"] = self.top1_same / self.top1_rows
        if self.mismatch:
            out["nonfinite_mismatch"] = self.mismatch
        return out


def _with_kind_metrics(metrics: dict, name: str, ref: list[dict], new: list[dict]) -> dict:
    """Replace the generic top-1 agreement with the metrics that fit the output's kind (output_kinds.py)."""
    from .output_kinds import kind_metrics
    a, b = [_comparable(r[name]) for r in ref], [_comparable(n[name]) for n in new]
    if any(x.dtype.kind in "OUS" for x in a + b):
        return metrics  # strings: the match metrics (output_values.as_match) already say all there is
    extra = kind_metrics(name, a, b)
    if extra.get("kind") != "scores":
        metrics.pop("top1_agreement", None)
    return {**metrics, **extra}


# -- latency ------------------------------------------------------------------------------------------

def median_latency(model_or_session, feed: dict, *, runs: int = 50, warmup: int = 3, budget_s: float = 5.0,
                   min_runs: int = 3) -> float:
    """Median seconds per run of `feed` (batch as given): `warmup` untimed runs, then up to `runs` timed
    runs, stopping early once `budget_s` is spent (but never below `min_runs`)."""
    sess = _as_session(model_or_session)
    start = time.perf_counter()
    for _ in range(warmup):
        _run_once(sess, feed)
        if time.perf_counter() - start > budget_s / 4:
            break
    times = []
    start = time.perf_counter()
    while len(times) < runs:
        t0 = time.perf_counter()
        _run_once(sess, feed)
        times.append(time.perf_counter() - t0)
        if len(times) >= min(min_runs, runs) and time.perf_counter() - start > budget_s:
            break
    return statistics.median(times)


def paired_latency(sess_a, sess_b, feed: dict, *, budget_s: float = 10.0, max_runs: int = 5000,
                   block_s: float = 0.15, skip: int = 2, min_runs: int = 3) -> tuple[float, float, int, tuple[float, float]]:
    """Median seconds per run of two sessions measured in alternating blocks (A,B,B,A,...) so that machine
    load and clock drift hit both alike. Returns (median A, median B, timed runs each, (25th, 75th
    percentile of the per-block-pair ratio B/A): the run-to-run spread of the ratio).

    The first `skip` runs of every block are not timed: onnxruntime's worker threads spin for a while after
    a run, so the first runs of a block share the cores with the other session's spinning threads (measured
    on EfficientNet-Lite0, blocks of 5 untrimmed runs put one 70%-MACs model anywhere from 0.65x to 0.87x of
    the original; 40-run blocks without their first runs gave 0.73-0.75x three times out of three)."""
    a, b = _as_session(sess_a), _as_session(sess_b)
    first = []
    for sess in (a, b):  # warm-up; its duration also sizes the blocks
        _run_once(sess, feed)
        t0 = time.perf_counter()
        _run_once(sess, feed)
        first.append(time.perf_counter() - t0)
    per_run = max(sum(first) / 2, 1e-6)
    block = max(1, min(int(block_s / per_run), int(budget_s / per_run / 8) - skip))
    times_a, times_b, ratios = [], [], []
    start = time.perf_counter()
    order = 0
    while len(times_a) < max_runs:
        if order % 2 == 0:
            block_a = _timed_block(a, feed, skip, block)
            block_b = _timed_block(b, feed, skip, block)
        else:
            block_b = _timed_block(b, feed, skip, block)
            block_a = _timed_block(a, feed, skip, block)
        times_a += block_a
        times_b += block_b
        ratios.append(statistics.median(block_b) / statistics.median(block_a))
        order += 1
        if len(times_a) >= min_runs and time.perf_counter() - start > budget_s:
            break
    q25, q75 = (float(np.percentile(ratios, q)) for q in (25, 75))
    return statistics.median(times_a), statistics.median(times_b), len(times_a), (q25, q75)


def _timed_block(sess, feed: dict, skip: int, runs: int) -> list[float]:
    """Seconds of `runs` runs, after `skip` untimed ones."""
    for _ in range(skip):
        _run_once(sess, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        _run_once(sess, feed)
        times.append(time.perf_counter() - t0)
    return times


def _run_once(sess: ort.InferenceSession, feed: dict) -> None:
    try:
        sess.run(None, feed)
    except Exception as err:
        raise SlimError(f"onnxruntime failed to run the model: {_first_line(err)}") from None


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


def compare_models(original: onnx.ModelProto, optimized: onnx.ModelProto, feeds: list[dict], *,
                   input_shapes: dict | None = None, latency: bool = True, progress=None,
                   latency_budget_s: float = 10.0, threads: int | None = None,
                   cost_reference: onnx.ModelProto | None = None, labels=None) -> dict:
    """The validation report of `optimized` against `original` on `feeds` (a list of feed dicts).

    {"macs": {"before", "after", "ratio"}, "params": {...}, "size_bytes": {...},
     "latency_ms": {"before", "after", "ratio", "ratio_iqr", "runs"} (only if `latency`; both models timed
     in alternating blocks on feeds[0], see paired_latency), "outputs": compare_outputs(...)}. Ratios are after / before. MACs are at batch 1 unless
    `input_shapes` say otherwise. `cost_reference` (an equivalent, normalized copy of the original) is what
    the "before" MACs/params are counted on when given: shape inference sees more of it. `labels` (ints, one
    per sample of `feeds`) add top1_accuracy / top5_accuracy sections (see label_accuracy).
    Raises SlimError if the optimized model's input/output names differ.
    """
    check_same_io(original, optimized)
    if not feeds:
        raise SlimError("no input data to validate with")
    progress = progress or silent
    report = {}
    shapes = _cost_shapes(original, feeds, input_shapes)
    costs = []
    for model in (cost_reference or original, optimized):
        try:
            costs.append(cost.model_cost(model, shapes))
        except SlimError as err:
            costs.append({"error": str(err)})
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
    size = model_size_bytes(original), model_size_bytes(optimized)
    report["size_bytes"] = {"before": size[0], "after": size[1], "ratio": _ratio(*size)}

    from .inputs import check_run_memory
    check_run_memory(original, {name: np.shape(value) for name, value in feeds[0].items()})  # before onnxruntime
    try:  # the original must run for a comparison to mean anything (custom domains, unfeedable types)
        sess_a = session(original, threads=threads)
        ref = [run(sess_a, [feed])[0] for feed in feeds]
    except SlimError as err:
        raise ValidationSkipped(f"the original model: {err}") from None
    sess_b = session(optimized, threads=threads)
    with progress("validating", total=len(feeds)) as bar:
        new = []
        for feed in feeds:
            new.append(run(sess_b, [feed])[0])
            bar.update(1)
    report["outputs"] = compare_outputs(ref, new)
    if labels is not None:
        from .labels import label_accuracy
        report.update(label_accuracy(ref, new, labels))
    if latency:
        with progress("timing", total=None):
            before, after, runs, spread = paired_latency(sess_a, sess_b, feeds[0], budget_s=latency_budget_s)
        report["latency_ms"] = {"before": before * 1e3, "after": after * 1e3, "ratio": _ratio(before, after),
                                "ratio_iqr": [round(spread[0], 4), round(spread[1], 4)], "runs": runs}
    return report


# -- terminal table -----------------------------------------------------------------------------------

def _si(value) -> str:
    if value is None:
        return "?"
    value = float(value)
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.4g}"


def _bytes(value) -> str:
    if value is None:
        return "?"
    for scale, suffix in ((2**30, "GB"), (2**20, "MB"), (2**10, "KB")):
        if value >= scale:
            return f"{value / scale:.3g} {suffix}"
    return f"{int(value)} B"


def _ms(value) -> str:
    return "?" if value is None else f"{value:.3g} ms"


def _pct(value) -> str:
    return "?" if value is None else f"{100 * value:.1f}%"


_ROWS = (("macs", "MACs", _si), ("params", "params", _si), ("size_bytes", "size", _bytes),
         ("latency_ms", "latency", _ms), ("top1_accuracy", "top-1 acc", _pct), ("top5_accuracy", "top-5 acc", _pct))


_KIND_METRICS = (("top1_agreement", "top-1 agree"), ("top5_agreement", "in top-5"), ("nn_agreement", "nearest-neighbour agree"),
                 ("pixel_agreement", "pixel argmax agree"), ("token_cosine", "token cosine"))


def format_report_table(report: dict) -> str:
    """A short before/after/ratio table plus one line per output; prints only the sections present."""
    lines = [f"{'':<12}{'before':>12}{'after':>12}{'ratio':>9}"]

    def row(label, section, fmt):
        ratio = section.get("ratio")
        line = f"{label:<12}{fmt(section.get('before')):>12}{fmt(section.get('after')):>12}" \
               f"{(f'{ratio:.3f}' if isinstance(ratio, (int, float)) else '-'):>9}"
        notes = []
        unknown = section.get("unknown_nodes")
        if isinstance(unknown, dict):
            notes.append(f"{unknown.get('before')}/{unknown.get('after')} nodes of unknown shape not counted")
        if section.get("error"):
            notes.append(str(section["error"]))
        spread = section.get("ratio_iqr")
        if isinstance(spread, (list, tuple)) and len(spread) == 2:
            notes.append(f"middle half of the timing blocks {spread[0]:.3f}-{spread[1]:.3f}")
            if isinstance(ratio, (int, float)) and spread[1] - spread[0] > 0.2 * ratio:
                # measured on 2 shared cores: 2-thread block ratios spanned 0.51-1.81, 1-thread ones +-0.02
                notes.append("timing unstable on this machine: try --threads 1")
        lines.append(line + ("  (" + "; ".join(notes) + ")" if notes else ""))

    known = set()
    for key, label, fmt in _ROWS:
        known.add(key)
        if isinstance(report.get(key), dict):
            row(label, report[key], fmt)
    for key, section in report.items():  # sections other passes add, e.g. accuracy
        if key not in known and isinstance(section, dict) and "before" in section and "after" in section:
            row(key.replace("_", " ")[:12], section, _si)
    if len(lines) == 1:
        lines = []
    for name, metrics in (report.get("outputs") or {}).items():
        if not isinstance(metrics, dict):
            continue
        parts = [f"output {name}:"]
        if "cosine" in metrics:
            parts.append(f"cosine {metrics['cosine']:.6f}")
        if "max_abs_error" in metrics:
            parts.append(f"max abs err {metrics['max_abs_error']:.3g}")
        if "sqnr_db" in metrics:
            parts.append(f"SQNR {metrics['sqnr_db']:.1f} dB")
        for key, label in _KIND_METRICS:
            if key in metrics:
                parts.append(f"{label} {100 * metrics[key]:.1f}%" if key.endswith("agreement") else f"{label} {metrics[key]:.4f}")
        if metrics.get("nonfinite_mismatch"):
            parts.append(f"NaN/inf mismatches {metrics['nonfinite_mismatch']}")
        lines.append("  ".join(parts))
    return "\n".join(lines)
