"""How far a model's outputs are from the original's: every metric the validation and the passes report.

- `compare_outputs`: the validation's per-output fidelity (cosine, errors, SQNR, NaN/inf mismatches, and the
  metric that fits the output's kind, output_kinds.py, which also holds the cosine primitives);
- `plan_loss`, `plan_fidelity`: what pruning minimizes and reports for a plan (KL of softmax for class
  scores, normalized squared error otherwise);
- `quantized_fidelity`, `worst_relative_error`: SQNR / relative error per output of a quantized model;
- `allocation_loss`, `mean_relative_error`: low-rank's rank allocation and sensitivity losses.
Outputs are lists of per-batch {name: array} dicts.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import FIDELITY_FAILED, SlimError
from .output_kinds import as_match as _as_match, comparable as _comparable, cosine, kind_metrics, normalized_rows

# SQNR of an exact match would be +inf, which is not JSON; float64 rounding noise sits near 300 dB anyway
_SQNR_CAP_DB = 300.0


def rows(a) -> np.ndarray:
    """[samples, features]; explicit sizes, since -1 is ambiguous for an empty output (a detector finding nothing)."""
    a = np.asarray(a)
    return a.reshape(len(a), int(np.prod(a.shape[1:]))) if a.ndim else a.reshape(1, 1)


def is_scores(a: np.ndarray) -> bool:
    """[batch, classes] float output (logits or probabilities)."""
    return a.ndim == 2 and a.shape[1] > 1 and np.issubdtype(a.dtype, np.floating)


def row_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine per row of two [rows, features] float64 arrays (norms floored, no zero-vector rule)."""
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def relative_squared_error(ref: np.ndarray, new: np.ndarray) -> float:
    """||new - ref||^2 / ||ref||^2 (an all-zero reference divides by 1), in float64."""
    ref, new = np.asarray(ref, np.float64), np.asarray(new, np.float64)
    return float(np.sum((new - ref) ** 2)) / (float(np.sum(ref ** 2)) or 1.0)


# -- validation ---------------------------------------------------------------------------------------

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
        self.cos_sum = self.max_abs = self.abs_sum = self.signal = self.noise = 0.0
        self.samples = self.elements = self.top1_same = self.top1_rows = self.mismatch = 0
        self.top1_applies = True

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        self.top1_applies &= is_scores(a)
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
        cos = cosine(x, y, axis=1)
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
    a, b = [_comparable(r[name]) for r in ref], [_comparable(n[name]) for n in new]
    if any(x.dtype.kind in "OUS" for x in a + b):
        return metrics  # strings: the match metrics (output_kinds.as_match) already say all there is
    extra = kind_metrics(name, a, b)
    if extra.get("kind") != "scores":
        metrics.pop("top1_agreement", None)
    return {**metrics, **extra}


# -- pruning: one plan against the original -----------------------------------------------------------

def _log_softmax(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    a = a - a.max(axis=1, keepdims=True)
    return a - np.log(np.exp(a).sum(axis=1, keepdims=True))


def plan_loss(reference: list[dict], outputs: list[dict]) -> float:
    """Sum over outputs of KL(softmax(ref) || softmax(new)) for [batch, classes] outputs, else squared error
    over the reference's variance; averaged over samples."""
    total = 0.0
    for name in reference[0]:
        ref = [np.asarray(r[name]) for r in reference]
        new = [np.asarray(o[name]) for o in outputs]
        if not np.issubdtype(ref[0].dtype, np.floating):
            continue
        if is_scores(ref[0]):
            kl = [np.sum(np.exp(_log_softmax(a)) * (_log_softmax(a) - _log_softmax(b)), axis=1) for a, b in zip(ref, new)]
            total += float(np.mean(np.concatenate(kl)))
        else:
            err = sum(float(((a.astype(np.float64) - b) ** 2).sum()) for a, b in zip(ref, new))
            flat = np.concatenate([a.reshape(-1).astype(np.float64) for a in ref])
            total += err / max(float(((flat - flat.mean()) ** 2).sum()), 1e-30)
    if not np.isfinite(total):
        return float("inf")
    return total


def plan_fidelity(reference: list[dict], outputs: list[dict]) -> dict:
    """loss (see plan_loss), and for [batch, classes] outputs the top-1 agreement; cosine per sample."""
    summary = {"loss": round(plan_loss(reference, outputs), 6)}
    for name in reference[0]:
        ref = np.concatenate([rows(r[name]) for r in reference]).astype(np.float64)
        new = np.concatenate([rows(o[name]) for o in outputs]).astype(np.float64)
        entry = {"cosine": round(float(np.mean(row_cosine(ref, new))), 6)}
        if is_scores(np.asarray(reference[0][name])):
            entry["top1_agreement"] = round(float(np.mean(ref.argmax(1) == new.argmax(1))), 4)
        summary[name] = entry
    return summary


# -- quantization -------------------------------------------------------------------------------------

def quantized_fidelity(ref: list[dict], got: list[dict], names: list[str]) -> dict:
    """Per output: SQNR in dB, relative L2 error and, for [batch, classes] outputs, top-1 agreement."""
    report = {}
    for name in names:
        r = np.concatenate([rows(b[name]) for b in ref]).astype(np.float64)
        g = np.concatenate([rows(b[name]) for b in got]).astype(np.float64)
        signal, noise = float((r ** 2).sum()), float(((g - r) ** 2).sum())
        entry = {
            "sqnr_db": round(10 * np.log10(signal / noise), 2) if noise > 0 and signal > 0 else (float("inf") if noise == 0 else None),
            "relative_error": round(float(np.sqrt(noise / signal)), 6) if signal > 0 else None,
        }
        shape = np.shape(ref[0][name])
        if len(shape) == 2 and shape[1] > 1:
            # classifier logits: does the argmax survive; embeddings: per-sample cosine similarity
            entry["top1_agreement"] = round(float((r.argmax(1) == g.argmax(1)).mean()), 4)
            entry["mean_cosine"] = round(float(np.mean(row_cosine(r, g))), 5)
        report[name] = entry
    return report


def worst_relative_error(report: dict) -> float:
    errors = [v["relative_error"] for v in report.values() if v.get("relative_error") is not None]
    return max(errors) if errors else 0.0


# -- low-rank -----------------------------------------------------------------------------------------

ALLOCATION_LOSSES = ("mse", "cosine", "similarity")


def allocation_loss(kind: str, ref: np.ndarray, out: np.ndarray) -> float:
    """"mse": relative squared error; "cosine": mean over samples of 1 - cosine; "similarity": relative squared
    error of the samples' cosine-similarity matrix (the geometry nearest-neighbour search sees)."""
    if kind == "mse":
        return relative_squared_error(ref, out)
    a, b = normalized_rows(ref.reshape(len(ref), -1)), normalized_rows(out.reshape(len(out), -1))
    if kind == "cosine":
        return float(np.mean(1.0 - np.sum(a * b, axis=1)))
    sa, sb = a @ a.T, b @ b.T
    off = ~np.eye(len(a), dtype=bool)
    return float(np.sum((sa - sb)[off] ** 2)) / (float(np.sum((sa[off] - sa[off].mean()) ** 2)) or 1.0)


def mean_relative_error(reference: list[dict], outputs: list[dict]) -> float:
    """Mean over batches and outputs of ||o' - o||^2 / ||o||^2."""
    errs = [relative_squared_error(ref[name], out[name]) for ref, out in zip(reference, outputs) for name in ref]
    return float(np.mean(errs)) if errs else 0.0
