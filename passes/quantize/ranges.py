"""Activation ranges from streamed calibration data: min/max, percentile, and KL-divergence (entropy) thresholds.

Pass 1 streams min/max (and per-channel means, used by bias correction); percentile and entropy need a
second pass that fills a fixed-range histogram of |x| per tensor. Memory is bounded by one batch of
activations plus `bins` counters per tensor, whatever the dataset size.

Entropy follows TensorRT's calibrator (Migacz, "8-bit inference with TensorRT", GTC 2017): for each
candidate threshold T (a bin edge), the reference distribution P is the histogram clipped at T with the
outliers added to its last bin; Q merges P's bins into as many groups as there are quantization levels
and spreads each group's mass evenly over its nonzero bins; pick the T with the smallest KL(P || Q).
Unlike onnxruntime's Entropy calibrator run with its defaults, every candidate from `levels` bins up to the
full range is tried, so the chosen T is below the max whenever clipping lowers the KL divergence.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from onnxslim.runtime import stream_tensors


@dataclass
class TensorStats:
    lo: float = np.inf
    hi: float = -np.inf
    hist: np.ndarray | None = None       # counts of nonzero |x| over [0, absmax], filled in pass 2
    channel_sum: np.ndarray | None = None
    count: int = 0                       # elements per channel summed so far (for channel means)
    mean_axis: int | None = None

    @property
    def absmax(self) -> float:
        return float(max(abs(self.lo), abs(self.hi)))

    @property
    def channel_mean(self) -> np.ndarray | None:
        return None if self.channel_sum is None else self.channel_sum / max(self.count, 1)


def collect(model, names: list[str], dataset, *, histogram: bool, bins: int = 2048, batch_size: int = 8,
            mean_axes: dict[str, int] | None = None, progress=None) -> dict[str, TensorStats]:
    """Stats for every tensor in `names`; `mean_axes` {name: axis} also accumulates per-channel means."""
    mean_axes = mean_axes or {}
    names = list(dict.fromkeys(names))
    stats = {n: TensorStats(mean_axis=mean_axes.get(n)) for n in names}
    batches = -(-len(dataset) // batch_size)

    def streamed(label: str):
        """(stats, values) of every non-empty float tensor of every batch, one pass over the data."""
        with progress(label, total=batches) if progress else nullcontext() as bar:
            for values in stream_tensors(model, names, dataset.batches(batch_size), progress=bar):
                yield from ((stats[n], values[n]) for n in names
                            if values[n].size and np.issubdtype(values[n].dtype, np.floating))

    for s, x in streamed("calibrating ranges"):
        s.lo, s.hi = min(s.lo, float(x.min())), max(s.hi, float(x.max()))
        if s.mean_axis is not None and x.ndim > s.mean_axis:
            axis = s.mean_axis % x.ndim
            part = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1).astype(np.float64)
            s.channel_sum = part.sum(axis=1) if s.channel_sum is None else s.channel_sum + part.sum(axis=1)
            s.count += part.shape[1]
    for s, x in streamed("calibrating histograms") if histogram else ():
        if not np.isfinite(s.absmax) or s.absmax == 0:
            continue
        # exact zeros (ReLU's half of the data) are represented exactly by any range; left in,
        # their spike dominates the divergence and drags every threshold down
        counts, _ = np.histogram(np.abs(x[x != 0]), bins=bins, range=(0.0, s.absmax))
        s.hist = counts.astype(np.float64) if s.hist is None else s.hist + counts
    return stats


def percentile_threshold(hist: np.ndarray, absmax: float, percentile: float) -> float:
    """The |x| below which `percentile` % of the samples lie (upper edge of the bin that crosses it)."""
    cdf = np.cumsum(hist)
    if cdf[-1] <= 0:
        return absmax
    idx = int(np.searchsorted(cdf, cdf[-1] * percentile / 100.0))
    return float(absmax * min(idx + 1, len(hist)) / len(hist))


def entropy_threshold(hist: np.ndarray, absmax: float, levels: int = 128, stride: int = 16) -> float:
    """The threshold minimizing KL(P || Q) between the clipped histogram and its `levels`-level quantization."""
    bins = len(hist)
    if hist.sum() <= 0 or bins <= levels:
        return absmax
    best_kl, best_i = np.inf, bins
    candidates = list(range(levels, bins, stride)) + [bins]
    for i in candidates:
        kl = _kl_for_threshold(hist, i, levels)
        if kl < best_kl:
            best_kl, best_i = kl, i
    return float(absmax * best_i / bins)


def _kl_for_threshold(hist: np.ndarray, i: int, levels: int) -> float:
    inside = hist[:i].astype(np.float64)
    p = inside.copy()
    p[-1] += hist[i:].sum()                      # the reference clips outliers to the threshold...
    nonzero = inside > 0
    # ...while Q quantizes only the bins inside it: merge the i bins into `levels` groups, then expand
    # back spreading each group's mass over its nonzero bins (as TensorRT's calibrator does)
    edges = np.linspace(0, i, levels + 1).round().astype(int)
    group = np.repeat(np.arange(levels), np.diff(edges))
    mass = np.bincount(group, weights=inside, minlength=levels)
    support = np.bincount(group, weights=nonzero.astype(np.float64), minlength=levels)
    q = np.where(nonzero, mass[group] / np.maximum(support[group], 1), 0.0)
    p_sum, q_sum = p.sum(), q.sum()
    if p_sum <= 0 or q_sum <= 0:
        return np.inf
    p, q = p / p_sum, q / q_sum
    mask = p > 0
    # a clipped-to bin with no inside mass has q = 0: smooth it instead of an infinite divergence
    return float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-10))))


def ranges_from_stats(stats: dict[str, TensorStats], method: str, *, symmetric: bool,
                      percentile: float = 99.99) -> dict[str, tuple[float, float]]:
    """(rmin, rmax) per tensor for `method` in minmax | percentile | entropy."""
    out = {}
    for name, s in stats.items():
        if not np.isfinite(s.lo) or not np.isfinite(s.hi):
            continue
        lo, hi = s.lo, s.hi
        if method != "minmax" and s.hist is not None:
            unsigned = lo >= 0 and not symmetric
            if method == "percentile":
                t = percentile_threshold(s.hist, s.absmax, percentile)
            else:
                t = entropy_threshold(s.hist, s.absmax, levels=256 if unsigned else 128)
            lo, hi = max(lo, -t), min(hi, t)
        out[name] = (float(lo), float(hi))
    return out
