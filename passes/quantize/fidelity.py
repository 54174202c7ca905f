"""How far the int8 model is from the float one: per-output SQNR (dB), top-1 agreement for classifier-like
outputs, worst relative error (what `tolerance` bounds), and size/latency ratios.

For the onnxruntime target this is measured with onnxruntime's real int8 kernels (full graph optimization),
so kernel effects such as int16 saturation on CPUs without VNNI show up, not only rounding. A TensorRT-target
graph is measured as a QDQ simulation (no int8 kernel fusion): onnxruntime's CPU kernels are not what
TensorRT will run.
"""
from __future__ import annotations

import time

import numpy as np
import onnx
import onnxruntime as ort

from onnxslim.errors import SlimError


def session(model: onnx.ModelProto, threads: int | None = None, optimize: bool = True) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # errors come back as exceptions, said in one line; no log lines on stderr
    if threads:
        opts.intra_op_num_threads = threads
    if not optimize:
        # basic level folds constants but does not fuse Q/DQ into onnxruntime's int8 kernels: the numbers are
        # those of exact int32 accumulation, i.e. what TensorRT computes from the same QDQ graph
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    try:
        return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SlimError(f"onnxruntime cannot load the quantized model: {first}") from None


def _run(s: ort.InferenceSession, names, feed: dict) -> list:
    """One run; an onnxruntime failure (a model onnxruntime loads but cannot execute) is one line, exit 2."""
    try:
        return s.run(names, feed)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SlimError(f"onnxruntime cannot run the model in the int8 fidelity check: {first}") from None


def outputs_on(model: onnx.ModelProto, feeds: list[dict], **kw) -> list[list[np.ndarray]]:
    s = session(model, **kw)
    names = [o.name for o in s.get_outputs()]
    inputs = {i.name for i in s.get_inputs()}
    return [_run(s, names, {k: v for k, v in f.items() if k in inputs}) for f in feeds]


def compare(ref: list[list[np.ndarray]], got: list[list[np.ndarray]], names: list[str]) -> dict:
    """Per output: SQNR in dB, relative L2 error and, for [batch, classes] outputs, top-1 agreement."""
    report = {}
    for k, name in enumerate(names):
        r = np.concatenate([np.asarray(b[k], np.float64).reshape(len(b[k]), -1) if np.ndim(b[k]) else np.asarray(b[k], np.float64).reshape(1, 1) for b in ref])
        g = np.concatenate([np.asarray(b[k], np.float64).reshape(len(b[k]), -1) if np.ndim(b[k]) else np.asarray(b[k], np.float64).reshape(1, 1) for b in got])
        signal, noise = float((r ** 2).sum()), float(((g - r) ** 2).sum())
        entry = {
            "sqnr_db": round(10 * np.log10(signal / noise), 2) if noise > 0 and signal > 0 else (float("inf") if noise == 0 else None),
            "relative_error": round(float(np.sqrt(noise / signal)), 6) if signal > 0 else None,
        }
        shape = np.shape(ref[0][k])
        if len(shape) == 2 and shape[1] > 1:
            # classifier logits: does the argmax survive; embeddings: per-sample cosine similarity
            entry["top1_agreement"] = round(float((r.argmax(1) == g.argmax(1)).mean()), 4)
            norms = np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1)
            entry["mean_cosine"] = round(float(np.mean((r * g).sum(1) / np.maximum(norms, 1e-30))), 5)
        report[name] = entry
    return report


def worst_relative_error(report: dict) -> float:
    errors = [v["relative_error"] for v in report.values() if v.get("relative_error") is not None]
    return max(errors) if errors else 0.0


def latency(model: onnx.ModelProto, feed: dict, runs: int = 20, threads: int = 1) -> float:
    """Median seconds per run at the feed's batch size (one thread: steadier on a shared machine)."""
    s = session(model, threads=threads)
    inputs = {i.name for i in s.get_inputs()}
    feed = {k: v for k, v in feed.items() if k in inputs}
    for _ in range(3):
        _run(s, None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        s.run(None, feed)
        times.append(time.perf_counter() - t)
    return float(np.median(times))
