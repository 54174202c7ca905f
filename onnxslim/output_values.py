"""Model outputs of any kind made comparable by the fidelity metrics: sequences, strings, ml_dtypes floats,
complex numbers."""
from __future__ import annotations

import numpy as np


def comparable(value) -> np.ndarray:
    """An array for the metrics: sequences are concatenated flat; ml_dtypes floats (bfloat16, float8,
    numpy kind V) as float64; complex as magnitude. Strings stay strings (see as_match)."""
    if isinstance(value, (list, tuple)):
        parts = [comparable(v).reshape(-1) for v in value]
        value = np.concatenate(parts) if parts else np.zeros(0)
    arr = np.asarray(value)
    if arr.dtype.kind == "V":
        arr = arr.astype(np.float64)
    if arr.dtype.kind == "c":
        arr = np.abs(arr)
    return arr


def as_match(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-numeric outputs (strings) as numbers: ones for the original, 1 where the optimized is equal and
    0 where it differs, so equal outputs score cosine 1 and any change lowers it."""
    if a.dtype.kind not in "OUS" and b.dtype.kind not in "OUS":
        return a, b
    same = np.vectorize(lambda x, y: x == y, otypes=[bool])(a, b) if a.size else np.zeros(a.shape, bool)
    return np.ones(a.shape), same.astype(np.float64)
