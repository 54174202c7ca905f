"""Intermediate activations streamed from onnxruntime, batch by batch, and small reducers over them.

A pass that needs statistics of inner tensors (input covariances for data-aware SVD, channel means for
pruning, ranges for quantization) asks for them by name; the model is copied with those tensors added as
graph outputs and run one batch at a time, so memory stays bounded whatever the number of batches.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import onnx
import onnxruntime as ort

from .errors import SlimError
from .graph import infer_shapes


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor we can learn about (inputs, outputs, initializers, inferred value_info)."""
    types = {}
    try:
        inferred = infer_shapes(model)
    except Exception:  # a model shape inference cannot handle still runs; unknown types fall back to float
        inferred = model
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types.setdefault(init.name, init.data_type)
    return types


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of `model` whose graph outputs are its own outputs followed by `names` (deduplicated)."""
    produced = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.input}
    produced |= {i.name for i in model.graph.initializer}
    missing = [n for n in names if n not in produced]
    if missing:
        raise SlimError(f"tensor(s) {missing[:3]} are not in the model's graph")
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    extra = [n for n in dict.fromkeys(names) if n not in present]
    if extra:
        types = _elem_types(model)
        for name in extra:
            copy.graph.output.append(onnx.helper.make_tensor_value_info(name, types.get(name, onnx.TensorProto.FLOAT), None))
    return copy


def make_session(model: onnx.ModelProto, *, threads: int | None = None, basic: bool = False) -> ort.InferenceSession:
    """A CPU session (models over 2 GB through a temporary folder with external data): validate.session."""
    from .validate import session
    return session(model, threads=threads, basic=basic)


class TensorTap:
    """One session on a copy of the model that also returns the named inner tensors; `tap(feed) -> dict`."""

    def __init__(self, model: onnx.ModelProto, names: list[str]):
        self.model = with_outputs(model, names)
        self.session = make_session(self.model)
        self.output_names = [o.name for o in self.model.graph.output]
        self._feeds = {i.name for i in self.session.get_inputs()}

    def __call__(self, feed: dict) -> dict[str, np.ndarray]:
        feed = {k: v for k, v in feed.items() if k in self._feeds}
        try:
            values = self.session.run(self.output_names, feed)
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise SlimError(f"onnxruntime failed on a calibration batch: {first}") from None
        return dict(zip(self.output_names, values))


def stream_tensors(model: onnx.ModelProto, names: list[str], batches: Iterable[dict], *, progress=None) -> Iterator[dict[str, np.ndarray]]:
    """Per batch, {name: array} for the model's outputs and the requested inner tensors.

    `progress`, if given, is a bar with `.update(n)` advanced by one per batch.
    """
    tap = TensorTap(model, names)
    for feed in batches:
        yield tap(feed)
        if progress is not None:
            progress.update(1)


def _rows(array: np.ndarray, axis: int) -> np.ndarray:
    """The array as [samples, features] with `axis` the feature axis, in float64."""
    array = np.moveaxis(np.asarray(array), axis, -1)
    return array.reshape(-1, array.shape[-1]).astype(np.float64, copy=False)


def _row_weights(weights, rows: int) -> np.ndarray | None:
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.size != rows:
        raise ValueError(f"weights have {w.size} entries for {rows} rows")
    return w


class GramAccumulator:
    """Running X^T X, sum and count of the features on one axis (float64), with optional row weights.

    `weights` (broadcast to the array without its feature axis) lets masked positions count for nothing,
    e.g. padding tokens of a transformer.
    """

    def __init__(self, axis: int = -1):
        self.axis = axis
        self.gram = None
        self.sum = None
        self.count = 0.0

    def update(self, array: np.ndarray, weights: np.ndarray | None = None) -> None:
        x = _rows(array, self.axis)
        w = _row_weights(weights, x.shape[0])
        xw = x if w is None else x * w[:, None]
        if self.gram is None:
            self.gram = np.zeros((x.shape[1], x.shape[1]))
            self.sum = np.zeros(x.shape[1])
        self.gram += xw.T @ x
        self.sum += xw.sum(axis=0)
        self.count += float(x.shape[0] if w is None else w.sum())

    @property
    def mean(self) -> np.ndarray:
        return self.sum / max(self.count, 1.0)

    @property
    def second_moment(self) -> np.ndarray:
        """E[x x^T] (uncentered)."""
        return self.gram / max(self.count, 1.0)

    @property
    def covariance(self) -> np.ndarray:
        """E[(x - mean)(x - mean)^T] (population covariance)."""
        mean = self.mean
        return self.second_moment - np.outer(mean, mean)


class CrossGramAccumulator:
    """Running X^T Y between the features of two arrays with the same rows, plus both sums (float64)."""

    def __init__(self, axis: int = -1):
        self.axis = axis
        self.cross = None
        self.sum_x = None
        self.sum_y = None
        self.count = 0.0

    def update(self, x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> None:
        x, y = _rows(x, self.axis), _rows(y, self.axis)
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} rows, y has {y.shape[0]}")
        w = _row_weights(weights, x.shape[0])
        xw = x if w is None else x * w[:, None]
        if self.cross is None:
            self.cross = np.zeros((x.shape[1], y.shape[1]))
            self.sum_x, self.sum_y = np.zeros(x.shape[1]), np.zeros(y.shape[1])
        self.cross += xw.T @ y
        self.sum_x += xw.sum(axis=0)
        self.sum_y += (y if w is None else y * w[:, None]).sum(axis=0)
        self.count += float(x.shape[0] if w is None else w.sum())

    @property
    def cross_covariance(self) -> np.ndarray:
        """E[(x - mean_x)(y - mean_y)^T]."""
        n = max(self.count, 1.0)
        return self.cross / n - np.outer(self.sum_x / n, self.sum_y / n)


class MeanAccumulator:
    """Running mean of the features on one axis (float64)."""

    def __init__(self, axis: int = -1):
        self.axis = axis
        self.sum = None
        self.count = 0

    def update(self, array: np.ndarray) -> None:
        x = _rows(array, self.axis)
        self.sum = x.sum(axis=0) if self.sum is None else self.sum + x.sum(axis=0)
        self.count += x.shape[0]

    @property
    def mean(self) -> np.ndarray:
        return self.sum / max(self.count, 1)
