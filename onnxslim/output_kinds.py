"""What an output is, and the agreement metric that fits it (validation, issue 11).

- class scores [N, C] (C > 1): top-1 (and top-5) agreement; "top-1" means nothing for an embedding.
- embeddings [N, D] (rows of unit norm, or a name saying so): cosine and nearest-neighbour agreement
  (does each sample's nearest other sample stay the same? what retrieval with the embedding relies on).
- dense maps [N, C, H, W] (segmentation, detection heads): per-pixel argmax agreement over C.
- sequences [N, S, H] (transformer hidden states): cosine per token, averaged over tokens.
Metrics that need every sample at once (nearest neighbours) take the concatenated rows. Outputs of any kind
(sequences, strings, ml_dtypes floats, complex numbers) are first made comparable (`comparable`, `as_match`).
"""
from __future__ import annotations

import re

import numpy as np

_EMBEDDING_NAME = re.compile(r"embed|pool|feature|vector|represent", re.IGNORECASE)


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


def cosine(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    """Cosine of the vectors along `axis`, in [-1, 1]; two zero vectors agree (1), one zero vector does not (0)."""
    na, nb = np.linalg.norm(a, axis=axis), np.linalg.norm(b, axis=axis)
    dot = np.sum(a * b, axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where((na > 0) & (nb > 0), dot / (na * nb), np.where((na == 0) & (nb == 0), 1.0, 0.0))
    return np.clip(cos, -1.0, 1.0)


def normalized_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)


def output_kind(name: str, a: np.ndarray) -> str:
    """"scores" | "embedding" | "dense" | "sequence" | "other" for one output batch `a`."""
    if not np.issubdtype(a.dtype, np.floating) or a.ndim < 2 or a.shape[1] <= 1:
        return "other"
    if a.ndim == 2:
        return "embedding" if _EMBEDDING_NAME.search(name) or _unit_rows(a) else "scores"
    return {3: "sequence", 4: "dense"}.get(a.ndim, "other")


def _unit_rows(a: np.ndarray) -> bool:
    # L2-normalized rows (sentence embeddings, face/retrieval features); logits almost never are
    if a.shape[0] < 2:
        return False
    norms = np.linalg.norm(a.astype(np.float64), axis=1)
    return bool(np.all(np.abs(norms - 1.0) < 1e-3))


def topk_agreement(ref: np.ndarray, new: np.ndarray, k: int = 5) -> float:
    """Fraction of rows where `new`'s top-1 class is among `ref`'s top-k classes."""
    k = min(k, ref.shape[1])
    top = np.argpartition(-ref, k - 1, axis=1)[:, :k]
    return float(np.mean(np.any(top == new.argmax(1)[:, None], axis=1)))


def nearest_neighbour_agreement(ref: np.ndarray, new: np.ndarray) -> float | None:
    """Fraction of samples whose nearest other sample (cosine) is the same under both outputs."""
    if len(ref) < 3:
        return None
    return float(np.mean(_nearest(ref) == _nearest(new)))


def _nearest(x: np.ndarray) -> np.ndarray:
    x = normalized_rows(x.reshape(len(x), -1).astype(np.float64))
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    return sim.argmax(1)


def pixel_argmax_agreement(ref: np.ndarray, new: np.ndarray) -> float:
    """Fraction of (sample, pixel) positions with the same argmax over the channel axis (axis 1)."""
    return float(np.mean(ref.argmax(1) == new.argmax(1)))


def token_cosine(ref: np.ndarray, new: np.ndarray) -> float:
    """Mean over (sample, token) of the cosine of the last-axis vectors; two zero vectors agree."""
    return float(np.mean(cosine(ref.astype(np.float64), new.astype(np.float64))))


def kind_metrics(name: str, ref: list[np.ndarray], new: list[np.ndarray]) -> dict:
    """{"kind": ..., metric: value} for one output over all batches (lists of per-batch arrays)."""
    if not ref:
        return {}
    kind = output_kind(name, np.asarray(ref[0]))
    if kind == "other" or len({np.shape(x)[1:] for x in ref + new}) > 1:
        return {"kind": kind}  # batches of different sizes (dynamic dims) do not stack into one table
    a = np.concatenate([np.asarray(r) for r in ref])
    b = np.concatenate([np.asarray(n) for n in new])
    out = {"kind": kind}
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return out
    if kind == "scores":
        out["top1_agreement"] = float(np.mean(a.argmax(1) == b.argmax(1)))
        if a.shape[1] > 5:
            out["top5_agreement"] = topk_agreement(a, b, 5)
    elif kind == "embedding":
        nn = nearest_neighbour_agreement(a, b)
        if nn is not None:
            out["nn_agreement"] = nn
    elif kind == "dense":
        out["pixel_agreement"] = pixel_argmax_agreement(a, b)
    elif kind == "sequence":
        out["token_cosine"] = token_cosine(a, b)
    return out
