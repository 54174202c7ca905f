"""Do two optimized models compute what the original computes? Random inputs at a shape the original runs
with (onnxslim.runshapes picks it, as the CLI does) and at a second size of each dynamic dim (half of the
first), compared output by output: same shapes, values within float tolerance.

Used by bench_vs_onnxslim.py: a node count is only worth comparing for a model that is still correct."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from onnxslim.inputs import random_feeds
from onnxslim.runshapes import choose


def _session(path: str):
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def _shape_sets(model: onnx.ModelProto) -> list[dict]:
    first = choose(model).shapes
    if first is None:
        return []
    dynamic = {vi.name: [not d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim] for vi in model.graph.input}
    second = {name: tuple(max(1, s // 2) if dyn else s for s, dyn in zip(shape, dynamic.get(name, [])))
              for name, shape in first.items()}
    return [first] + ([second] if second != first else [])


def _same(want: np.ndarray, got: np.ndarray) -> bool:
    if want.shape != got.shape or want.dtype != got.dtype:
        return False
    if want.dtype.kind not in "fc":
        return bool(np.array_equal(want, got))
    scale = float(np.max(np.abs(want))) if want.size else 0.0
    return bool(np.allclose(got, want, rtol=1e-3, atol=1e-4 + 1e-3 * scale, equal_nan=True))


def check(original: str, candidates: dict[str, str]) -> dict:
    """{"<name>_ok": True | False} for each candidate path, "<name>_why" for a False, and "check_shapes":
    the input shapes used; {"check": reason} when the original gives nothing to compare with."""
    model = onnx.load(original, load_external_data=False)
    result: dict = {}
    try:
        shape_sets, ref = _shape_sets(model), _session(original)
    except Exception as err:  # noqa: BLE001 - the original itself does not load or run
        return {"check": f"original not runnable: {str(err).splitlines()[0][:120]}"}
    runnable = []
    for shapes in shape_sets:
        feeds = random_feeds(model, shapes, seed=1)[0]
        try:
            runnable.append((shapes, feeds, ref.run(None, feeds)))
        except Exception:  # noqa: BLE001 - the halved size does not run: compare at the first only
            continue
    if not runnable:
        return {"check": "no runnable input shape found"}
    result["check_shapes"] = [{k: list(v) for k, v in s.items()} for s, _, _ in runnable]
    for name, path in candidates.items():
        result[f"{name}_ok"] = _candidate_ok(path, runnable, result, name)
    return result


def _candidate_ok(path: str, runnable: list, result: dict, name: str) -> bool | None:
    try:
        sess = _session(path)
        for _, feeds, want in runnable:
            got = sess.run(None, feeds)
            if len(got) != len(want) or not all(_same(w, g) for w, g in zip(want, got)):
                shapes = [(tuple(w.shape), tuple(g.shape)) for w, g in zip(want, got)]
                result[f"{name}_why"] = f"outputs differ (original vs this, shapes {shapes[:3]})"
                return False
    except Exception as err:  # noqa: BLE001 - a model onnxruntime rejects or that fails at run time is wrong
        result[f"{name}_why"] = f"fails: {str(err).strip().splitlines()[0][:160]}"
        return False
    return True
