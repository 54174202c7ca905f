"""Channel importance from calibration activations, measured at each group's exits (the tensors the
consumers read, i.e. after the activation function):

- activation: mean |x| of the channel (DropNet's mean activation);
- apoz: 1 - the average percentage of zeros (Hu et al. 2016), so higher still means more important;
- hrank: the average matrix rank of the channel's 2-D feature maps (Lin et al. 2020);
- reconstruction: ThiNet / He et al. 2017 at the exits: classes are removed greedily, each time the one
  whose removal, after a least-squares refit of the exit (optimal-brain-surgeon downdates of the inverse
  input Gram), raises the exit's output error least; a class's score is the error step at its removal,
  normalized by the exit's output energy, so scores rank across groups for global allocation.

Statistics stream batch by batch; only per-channel sums and the exits' Gram matrices are kept.
"""
from __future__ import annotations

import numpy as np

from onnxslim.channels import Group

from .exits import Exit
from .repair import ExitStats

DATA_CRITERIA = ("activation", "apoz", "hrank", "reconstruction")
ZERO = 1e-6  # |x| at or below this counts as zero for apoz (Clip/Relu give exact zeros)


class ChannelStats:
    """Per-feature sums over one exit input: |x|, zero count, and (rank-4 inputs) feature-map ranks."""

    def __init__(self, n: int, hrank_samples: int):
        self.abs_sum = np.zeros(n)
        self.zeros = np.zeros(n)
        self.count = 0
        self.rank_sum = np.zeros(n)
        self.rank_count = 0
        self.hrank_samples = hrank_samples

    def update(self, x: np.ndarray, axis: int, want_rank: bool) -> None:
        moved = np.moveaxis(x, axis, -1)
        flat = moved.reshape(-1, moved.shape[-1])
        self.abs_sum += np.abs(flat).sum(0, dtype=np.float64)
        self.zeros += (np.abs(flat) <= ZERO).sum(0)
        self.count += flat.shape[0]
        if want_rank and x.ndim == 4 and axis == 1 and self.rank_count < self.hrank_samples:
            take = x[: self.hrank_samples - self.rank_count].astype(np.float32)
            ranks = np.linalg.matrix_rank(take.reshape(-1, *take.shape[2:])).reshape(take.shape[:2])
            self.rank_sum += ranks.sum(0)
            self.rank_count += take.shape[0]


def _input_axis(exit: Exit, x: np.ndarray) -> int:
    return 1 if exit.op in ("conv", "gemm") else x.ndim - 1


def collect_channel_stats(exits: list[Exit], tapped, names, batches, *, want_rank: bool, hrank_samples: int = 16,
                          progress=None) -> dict[str, ChannelStats]:
    """One streamed pass over `batches` with a session `tapped` that returns the exits' inputs."""
    stats: dict[str, ChannelStats] = {}
    first = {}
    for e in exits:
        first.setdefault(e.input, e)
    for feed in batches:
        got = dict(zip(names, tapped.run(names, feed)))
        for name, e in first.items():
            x = got[name]
            axis = _input_axis(e, x)
            stats.setdefault(name, ChannelStats(x.shape[axis], hrank_samples)).update(x, axis, want_rank)
        del got
        if progress is not None:
            progress.update(1)
    return stats


def _per_class(group: Group, exit: Exit, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum of per-channel values into the group's classes via the exit's channel -> class map."""
    per_channel_class = exit.feature_class[:: int(np.prod(exit.kernel))] if exit.op == "conv" else exit.feature_class
    out = np.zeros(group.n_classes)
    hits = np.zeros(group.n_classes)
    np.add.at(out, per_channel_class, values)
    np.add.at(hits, per_channel_class, 1)
    return out, hits


def activation_scores(group: Group, exits: list[Exit], stats: dict[str, ChannelStats], criterion: str) -> np.ndarray | None:
    total = np.zeros(group.n_classes)
    hits = np.zeros(group.n_classes)
    for e in exits:
        s = stats.get(e.input)
        if s is None or not s.count:
            continue
        if criterion == "activation":
            v = s.abs_sum / s.count
        elif criterion == "apoz":
            v = 1.0 - s.zeros / s.count
        else:
            if not s.rank_count:
                return None
            v = s.rank_sum / s.rank_count
        v = v / (v.mean() + 1e-12)  # each exit counts equally, whatever its scale
        add, n = _per_class(group, e, v)
        total += add
        hits += n
    if not hits.any():
        return None
    return total / np.maximum(hits, 1)


def _obs_state(e: Exit, s: ExitStats, ridge: float, prior_rows: float) -> list:
    """[exit, inverse of its ridged Gram with the bias row, W with the bias column, output energy]."""
    f = e.n_features
    h = s.gram.copy()
    # only a singular Gram (fewer rows than features) is shrunk: with enough rows the plain OBS scores
    # gave the better sensitivity plans (73.3 vs 71.2% top-1 at 80% MACs, RESULTS.md)
    shrink = 1.0 + (prior_rows * f / max(s.count, 1) if s.count < f else 0.0)
    lam = ridge * shrink * float(np.diag(h)[:f].mean() + 1e-12)
    h[np.arange(f), np.arange(f)] += lam
    h[f, f] += 1e-9 * max(s.count, 1)
    try:
        hinv = np.linalg.inv(h)
    except np.linalg.LinAlgError:
        hinv = np.linalg.pinv(h)
    bias = e.bias if e.bias is not None else np.zeros(e.w2.shape[0])
    w = np.concatenate([e.w2, bias[:, None]], axis=1)  # [outputs, features + 1]
    return [e, hinv, w, max(s.y_sq, 1e-30)]


def _removal_cost(states: list, cand: np.ndarray) -> np.ndarray:
    """Per candidate class, the output energy lost (OBS) by removing its features from every exit."""
    delta = np.zeros(len(cand))
    for e, hinv, w, energy in states:
        feats = [np.flatnonzero(e.feature_class == c) for c in cand]
        if all(len(f) == 1 for f in feats):
            idx = np.array([f[0] for f in feats])
            d = np.maximum(np.diag(hinv)[idx], 1e-30)
            delta += (w[:, idx] ** 2).sum(0) / d / energy
        else:
            for j, f in enumerate(feats):
                if len(f):
                    block = hinv[np.ix_(f, f)]
                    wb = w[:, f]
                    delta[j] += float(np.sum(wb * np.linalg.solve(block + 1e-30 * np.eye(len(f)), wb.T).T)) / energy
    return delta


def reconstruction_scores(group: Group, exits: list[Exit], stats: dict[str, ExitStats], ridge: float = 1e-3,
                          chunks: int = 48, prior_rows: float = 0.0) -> np.ndarray | None:
    """Greedy backward elimination over the group's free classes (see module doc). Classes are removed a
    few at a time (about n/chunks per step, block OBS downdate), which keeps it O(chunks * F^2) per exit.

    `prior_rows`: extra ridge per (features / rows) where the rows are fewer than the features. Such an
    exit (a classifier on pooled features sees one row per image: 64 rows for 1280 features) can rebuild
    its output from almost any subset of them, so unshrunk scores call most features free (global
    allocation then cut the classifier's input: 7.6% top-1 at 90% MACs); the shrinkage pulls such scores toward
    weight x input energy."""
    exits = [e for e in exits if e.node in stats]
    if not exits:
        return None
    states = [_obs_state(e, stats[e.node], ridge, prior_rows) for e in exits]
    free = np.flatnonzero(~group.frozen)
    alive = np.zeros(group.n_classes, bool)
    alive[free] = True
    score = np.full(group.n_classes, np.inf)
    running = 0.0
    n_free = len(free)
    while alive.any():
        cand = np.flatnonzero(alive)
        delta = _removal_cost(states, cand)
        step = max(1, int(np.ceil(n_free / chunks))) if len(cand) > 8 else 1
        order = np.argsort(delta, kind="stable")[:step]
        removed = cand[order]
        running = max(running, float(delta[order].max()))
        score[removed] = running
        alive[removed] = False
        for st in states:
            e, hinv, w = st[0], st[1], st[2]
            f = np.flatnonzero(np.isin(e.feature_class, removed))
            if not len(f):
                continue
            block = hinv[np.ix_(f, f)]
            try:
                binv = np.linalg.inv(block)
            except np.linalg.LinAlgError:
                binv = np.linalg.pinv(block)
            rows = hinv[f, :]
            st[2] = w - (w[:, f] @ binv) @ rows
            st[1] = hinv - hinv[:, f] @ binv @ rows
            st[2][:, f] = 0.0
    finite = score[np.isfinite(score)]
    top = finite.max() if len(finite) else 1.0
    score[~np.isfinite(score)] = 2 * top + 1.0  # frozen classes: always kept
    return score
