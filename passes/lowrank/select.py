"""Rank choice: per layer from an energy threshold, or across layers to meet a MACs budget.

Each layer offers options (scheme, rank, MACs, error) plus "keep as is" (full MACs, error 0). Only options
that save MACs are offered, so a layer whose spectrum is too flat to pay off is simply kept.
The budget allocation is a Lagrangian relaxation: for a price lam every layer picks the option minimizing
error + lam * MACs/total; lam is bisected until the budget holds, then leftover budget buys back error
greedily (best error drop per MAC first).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .layers import Layer


ERROR_FLOOR = 1e-9  # relative errors below this are rounding noise: an exact split is as good as the original


@dataclass
class Option:
    scheme: str | None   # "matmul" (x A B), "channel", "spatial", or None = keep
    rank: int
    macs: int
    error: float


def _conv_dims(layer: Layer):
    cout, cin, kh, kw = layer.kernel.shape
    return cout, cin, kh, kw


def layer_macs(layer: Layer, shapes: dict) -> int:
    """Per-sample MACs of the layer as it is."""
    out = shapes["output"]
    batch = shapes["batch"]
    if layer.kind == "conv":
        return int(np.prod(out[2:])) * layer.in_features * layer.out_features
    rows = int(np.prod(out)) // layer.out_features // batch
    return rows * layer.in_features * layer.out_features


def split_macs(layer: Layer, shapes: dict, scheme: str, rank: int) -> int:
    """Per-sample MACs of the two nodes replacing the layer at this rank."""
    out, x = shapes["output"], shapes["input"]
    if layer.kind != "conv":
        rows = int(np.prod(out)) // layer.out_features // shapes["batch"]
        return rows * rank * (layer.in_features + layer.out_features)
    cout, cin, kh, kw = _conv_dims(layer)
    ho, wo = out[2], out[3]
    if scheme == "channel":
        return ho * wo * rank * (cin * kh * kw + cout)
    return ho * x[3] * rank * cin * kh + ho * wo * cout * rank * kw


def schemes_for(layer: Layer, conv_svd: str) -> list[str]:
    """The split schemes to consider: spatial SVD needs a kernel that is more than 1 wide both ways."""
    if layer.kind != "conv":
        return ["matmul"]
    kh, kw = layer.kernel.shape[2:]
    spatial_ok = kh > 1 and kw > 1
    if conv_svd == "channel":
        return ["channel"]
    if conv_svd == "spatial":
        return ["spatial"] if spatial_ok else []
    return ["channel", "spatial"] if spatial_ok else ["channel"]


def candidate_ranks(full: int, round_to: int) -> list[int]:
    step = max(1, int(round_to))
    return list(range(step, full + 1, step))


def options_for(layer: Layer, shapes: dict, errors: dict[str, np.ndarray], round_to: int, max_error: float | None) -> list[Option]:
    """Options that save MACs, for every scheme whose error curve is given (errors[scheme][r])."""
    base = layer_macs(layer, shapes)
    opts = [Option(None, 0, base, 0.0)]
    for scheme, curve in errors.items():
        full = len(curve) - 1
        for r in candidate_ranks(full, round_to):
            macs = split_macs(layer, shapes, scheme, r)
            err = float(curve[min(r, full)])
            err = 0.0 if err < ERROR_FLOOR else err
            if macs < base and (max_error is None or err <= max_error):
                opts.append(Option(scheme, r, macs, err))
    return opts


def by_energy(curves: dict[str, np.ndarray], energy: float, round_to: int) -> dict[str, int]:
    """Per scheme the smallest rank (rounded up) whose relative error is at most 1 - energy."""
    ranks = {}
    for scheme, curve in curves.items():
        full = len(curve) - 1
        ok = np.nonzero(curve <= (1.0 - energy) + 1e-9)[0]
        r = int(ok[0]) if ok.size else full
        step = max(1, int(round_to))
        ranks[scheme] = min(full, max(step, -(-r // step) * step))
    return ranks


def allocate(options: dict[str, list[Option]], budget: float, weights: dict[str, float] | None = None) -> dict[str, Option]:
    """Pick one option per layer with total MACs <= budget, minimizing the (weighted) sum of errors."""
    weights = weights or {}
    total = float(sum(opts[0].macs for opts in options.values())) or 1.0

    def pick(lam):
        chosen = {}
        for name, opts in options.items():
            w = weights.get(name, 1.0)
            chosen[name] = min(opts, key=lambda o: (w * o.error + lam * o.macs / total, o.macs))
        return chosen

    def cost(chosen):
        return sum(o.macs for o in chosen.values())

    lo, hi = 0.0, 1.0
    while cost(pick(hi)) > budget and hi < 1e12:
        hi *= 4
    chosen = pick(hi)
    if cost(chosen) > budget:  # even the cheapest options do not fit: take them, the report shows the shortfall
        return {name: min(opts, key=lambda o: o.macs) for name, opts in options.items()}
    for _ in range(60):
        mid = (lo + hi) / 2
        if cost(pick(mid)) <= budget:
            hi = mid
        else:
            lo = mid
    chosen = pick(hi)
    _spend_leftover(chosen, options, budget, weights)
    return chosen


def _spend_leftover(chosen, options, budget, weights) -> None:
    spent = sum(o.macs for o in chosen.values())
    while True:
        best, best_gain = None, 0.0
        for name, opts in options.items():
            cur = chosen[name]
            w = weights.get(name, 1.0)
            for o in opts:
                extra = o.macs - cur.macs
                drop = w * (cur.error - o.error)
                if drop > ERROR_FLOOR and spent + extra <= budget:
                    gain = drop / max(extra, 1)
                    if gain > best_gain:
                        best, best_gain = (name, o), gain
        if best is None:
            return
        name, o = best
        spent += o.macs - chosen[name].macs
        chosen[name] = o
