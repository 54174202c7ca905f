"""Least-squares repair of exit layers (ThiNet / He et al. 2017, with the original model as the target).

For an exit with kept input features K, the new weights minimize
    sum over calibration rows ||y_orig - W_K x_K - b||^2 + lam ||W_K - W0_K||^2
where x comes from the *current* (pruned, partly repaired) model and y_orig from the original model at
the same positions, so each refit also absorbs the drift of everything upstream. The intercept b is the
bias correction for the mean shift (fitted jointly, not penalized). Shrinking toward the original weights
W0 rather than toward zero keeps a refit from 64 images from overfitting when features outnumber rows.

A branch exit whose output only feeds a residual Add (`sum = y + skip`) is fitted to original(sum) minus
the current skip instead of to its own original output: the residual stream is what later layers read, so
the branch also takes up what upstream pruning left wrong in the skip (measured on EfficientNet-Lite0 at
70% of the MACs: 41.5% -> 60% top-1; benchmarks/RESULTS.md). A constant bias Add between the exit and the
sum (MatMul -> Add(bias) -> Add(skip) in exported transformers) is subtracted from that target. When an
exit the skip depends on is refit from the same statistics, the plain target is used, else the same drift
would be corrected twice.

Only X^T X, X^T Y and sum(Y^2) are accumulated per batch (float64), so memory does not grow with data.
"""
from __future__ import annotations

import numpy as np

from onnxslim.errors import SlimError

from onnxslim.runtime import tapped_session

from .evaluate import State, parametric_model
from .prefix import prefix_session
from .exits import Exit


class ExitStats:
    """Running [X 1]^T [X 1], [X 1]^T Y and sum(Y^2) of one exit."""

    def __init__(self, exit: Exit):
        f = exit.n_features + 1
        self.gram = np.zeros((f, f))
        self.cross = np.zeros((f, exit.w2.shape[0]))
        self.y_sq = 0.0
        self.count = 0

    def update(self, x: np.ndarray, y: np.ndarray) -> None:
        # float32 products per batch (5x faster), float64 running sums
        xa = np.concatenate([x.astype(np.float32, copy=False), np.ones((x.shape[0], 1), np.float32)], axis=1)
        y = y.astype(np.float32, copy=False)
        self.gram += xa.T @ xa
        self.cross += xa.T @ y
        self.y_sq += float(np.sum(y.astype(np.float64) ** 2))
        self.count += x.shape[0]

    def error(self, w2: np.ndarray, bias: np.ndarray) -> float:
        """sum ||y - W x - b||^2 over the accumulated rows, from the moments alone."""
        wt = np.concatenate([w2.T, bias[None, :]], axis=0)
        return float(self.y_sq - 2 * np.sum(wt * self.cross) + np.sum(wt * (self.gram @ wt)))

    def relative_error(self, w2: np.ndarray, bias: np.ndarray) -> float:
        return max(self.error(w2, bias), 0.0) / max(self.y_sq, 1e-30)


def solve(exit: Exit, stats: ExitStats, keep: np.ndarray, ridge: float, prior_w2: np.ndarray | None = None,
          prior_bias: np.ndarray | None = None, prior_rows: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Refit (w2 [outputs, features] with zeros outside `keep`, bias) by ridge least squares toward the prior
    (default: the exit's original weights). `prior_rows` scales the pseudo-count part of the pull (0 = plain
    ridge, which with ridge=0 is ordinary least squares)."""
    prior_w2 = exit.w2 if prior_w2 is None else prior_w2
    prior_bias = (exit.bias if exit.bias is not None else np.zeros(exit.w2.shape[0])) if prior_bias is None else prior_bias
    n = exit.n_features
    idx = np.r_[keep, n] if exit.has_bias else np.asarray(keep)
    a = stats.gram[np.ix_(idx, idx)].copy()
    b = stats.cross[idx].copy()
    k = len(keep)
    diag = np.diag(a)[:k]
    # pseudo-count prior: the pull toward the original grows with features per row, so a Gemm refit
    # from 64 pooled rows stays near the original (it mostly corrects the bias) instead of interpolating
    lam = (ridge + prior_rows * k / max(stats.count, 1)) * (float(diag.mean()) if k else 0.0) + 1e-12
    prior = prior_w2[:, keep].T
    a[np.arange(k), np.arange(k)] += lam
    b[:k] += lam * prior
    if exit.has_bias:  # a tiny pull on the intercept keeps the system regular without constraining it
        a[k, k] += 1e-9 * max(stats.count, 1)
        b[k] += 1e-9 * max(stats.count, 1) * prior_bias
    try:
        sol = np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        sol = np.linalg.lstsq(a, b, rcond=None)[0]
    w2 = np.zeros_like(exit.w2)
    w2[:, keep] = sol[:k].T
    bias = sol[k] if exit.has_bias else np.zeros(exit.w2.shape[0])
    return w2, bias


def collect(original_model, current_model, exits: list[Exit], state: State | None, batches, *,
            per_sample: int = 256, seed: int = 0, progress=None, residual: bool = False,
            together: set[str] | None = None) -> dict[str, ExitStats]:
    """Stats of `exits`: inputs from `current_model` (the parametric model fed `state`; None = the original
    model itself), targets from `original_model`, at the same sampled positions, batch by batch. With
    `residual`, an exit feeding a residual Add gets the target original(sum) - current(skip) instead of
    original(output): the refit branch then restores the residual stream, not just its own output. Not when
    an exit the skip depends on is in `together` (the exits refit from these same statistics)."""
    stats = {e.node: ExitStats(e) for e in exits}
    fix_skip = residual and current_model is not None
    together = together or set()
    skips = {e.node: e.residual for e in exits
             if fix_skip and e.residual is not None and not (e.skip_upstream & together)}
    in_names = list(dict.fromkeys([e.input for e in exits] + [r[1] for r in skips.values()]))
    out_names = list(dict.fromkeys(skips[e.node][0] if e.node in skips else e.output for e in exits))
    if current_model is None:
        sess, names = tapped_session(original_model, in_names + out_names)
        orig_sess = None
    else:
        # a wave's tensors: only the network up to them runs (prefix.py); the same values as the whole model
        sess, names = prefix_session(current_model, in_names)
        orig_sess, orig_names = prefix_session(original_model, out_names)
    weights = state.feeds() if state is not None else {}
    rng = np.random.default_rng(seed)
    for feed in batches:
        try:
            got = dict(zip(names, sess.run(names, {**feed, **weights})))
            if orig_sess is not None:
                original = dict(zip(orig_names, orig_sess.run(orig_names, feed)))
        except Exception as err:
            raise SlimError(f"onnxruntime failed on a calibration batch: {str(err).splitlines()[0]}") from None
        for e in exits:
            if e.node in skips:
                total, skip = skips[e.node]
                target = original[total] - got[skip]
                if e.residual_offset is not None:  # the bias Add between the exit and the sum (same broadcast)
                    target = target - e.residual_offset
            else:
                target = (original if orig_sess is not None else got)[e.output]
            x, y = e.rows(got[e.input], target, rng, per_sample)
            stats[e.node].update(x, y)
        del got
        if progress is not None:
            progress.update(1)
    return stats


def waves(exits: list[Exit], count: int) -> list[list[Exit]]:
    """Split exits (topological order) into `count` consecutive runs of similar size."""
    count = max(1, min(count, len(exits)))
    bounds = np.linspace(0, len(exits), count + 1).round().astype(int)
    return [exits[a:b] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def repair(original_model, exits: list[Exit], plan: dict, state: State, dataset, *,
           ridge: float, batch_size: int, per_sample: int, passes: int, seed: int, progress, prior_rows: float = 1.0,
           loss=None, residual: bool = False) -> dict:
    """Refit every exit in `exits` in topological order, `passes` waves: each wave collects its exits'
    inputs from the model with all earlier waves already repaired; each keeps the features `plan` keeps.
    Mutates `state`; returns per-exit relative errors before/after."""
    report = {}
    if not exits:
        return report
    current = parametric_model(original_model, state.exits)
    chunks = waves(exits, passes)
    best = loss(state) if loss is not None else None
    n_batches = -(-len(dataset) // batch_size)
    with progress("repairing", total=n_batches * len(chunks)) as bar:
        for i, chunk in enumerate(chunks):
            stats = collect(original_model, current, chunk, state, dataset.batches(batch_size),
                            per_sample=per_sample, seed=seed + i, progress=bar, residual=residual,
                            together={e.node for e in chunk})
            kept_before = {e.node: (state.w2[e.node], state.bias[e.node]) for e in chunk}
            for e in chunk:
                s = stats[e.node]
                before = s.relative_error(state.w2[e.node], state.bias[e.node])
                w2, bias = solve(e, s, e.kept(plan), ridge, prior_rows=prior_rows)
                after = s.relative_error(w2, bias)
                if after < before:  # in-sample LS never loses; the guard covers a degenerate solve
                    state.w2[e.node], state.bias[e.node] = w2, bias
                report[e.node] = {"relative_error_before": round(before, 6), "relative_error_after": round(min(after, before), 6)}
            if loss is not None:
                # a wave refits its exits against inputs from before the wave; when that makes the network
                # worse on the fidelity samples, the wave is undone
                now = loss(state)
                if now > best:
                    for node, (w2, bias) in kept_before.items():
                        state.w2[node], state.bias[node] = w2, bias
                        report[node]["kept"] = "previous weights (the wave raised the calibration loss)"
                else:
                    best = now
    return report
