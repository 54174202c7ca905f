"""Running statistics of activations, batch by batch (runtime.stream_tensors yields the batches).

A pass that needs statistics of inner tensors (input covariances for data-aware SVD, channel means for
pruning, ranges for quantization) taps them by name and reduces each batch as it comes, so memory stays
bounded whatever the number of batches.
"""
from __future__ import annotations

import numpy as np


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

