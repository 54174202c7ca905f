"""How far the int8 model is from the float one, on calibration batches (metrics.quantized_fidelity).

For the onnxruntime target this is measured with onnxruntime's real int8 kernels (full graph optimization),
so kernel effects such as int16 saturation on CPUs without VNNI show up, not only rounding. A TensorRT-target
graph is measured as a QDQ simulation (basic optimizations: no int8 kernel fusion): onnxruntime's CPU
kernels are not what TensorRT will run.

The accuracy fallback of `--tolerance` (int8 and the weight-only modes) searches here too: the layers whose
quantization alone hurts the outputs most go back to float, doubling their number until the worst relative
output error holds, then bisecting down to the fewest that do (`report["fallback"]` says what was tried).
"""
from __future__ import annotations

import onnx

from onnxslim.metrics import quantized_fidelity, worst_relative_error
from onnxslim.runtime import outputs_on

RUN_FAILED = "onnxruntime cannot run the model in the int8 fidelity check"


def outputs(model: onnx.ModelProto, feeds: list[dict], optimize: bool = True) -> list[dict]:
    return outputs_on(model, feeds, basic=not optimize, what=RUN_FAILED)


def error(ref: list[dict], model: onnx.ModelProto, feeds: list[dict], names: list[str], optimize: bool = True) -> float:
    """Worst relative output error of `model` against the reference outputs `ref` on `feeds`."""
    return worst_relative_error(quantized_fidelity(ref, outputs(model, feeds, optimize), names))


def fallback_entry(report: dict, tolerance: float, err: float) -> dict:
    """The fallback entry of a quantized model whose error is `err`; "met" says whether a search is needed."""
    entry = {"tolerance": tolerance, "error_before": round(err, 6), "kept_in_float": [], "met": err <= tolerance}
    report["fallback"] = entry
    return entry


def fallback_search(entry: dict, ranking: list[tuple[str, float]], measure, tolerance: float, *,
                    top: int | None = None, base: tuple | None = None, digits: int = 6) -> tuple:
    """(error, model, names in float) of the fewest of the `top` first `ranking` names (name, error alone;
    worst first) that meet `tolerance`; when no count does, the lowest error measured (`base`, the
    (error, model, []) with none in float, included). `measure(names) -> (error, model)` with `names` in float."""
    entry["ranking_top"] = [{"node": n, "error_alone": round(e, digits)} for n, e in ranking[:10]]
    names = [n for n, _ in ranking]
    top = len(names) if top is None else top
    tried, best, hit = {}, base, None

    def met(k: int) -> bool:
        nonlocal best, hit
        err, model = measure(names[:k])
        tried[k] = err
        if err <= tolerance:
            hit = (err, model, names[:k])
        elif best is None or err < best[0]:
            best = (err, model, names[:k])
        return err <= tolerance

    lo, hi = 0, 1
    while top and not met(hi) and hi < top:
        lo, hi = hi, min(2 * hi, top)
    while hit is not None and hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if met(mid) else (mid, hi)
    err, model, floats = hit or best
    entry["tried"] = {str(j): round(v, digits) for j, v in sorted(tried.items())}
    entry.update({"error_after": round(err, 6), "met": err <= tolerance, "kept_in_float": floats})
    return err, model, floats
