"""Step-by-step rank allocation measured on the already-compressed model.

One-shot sensitivity weights (each layer split alone, near one probe error, from the original model) assume
that a layer's cost at the outputs is linear in its own error and independent of the other layers' cuts.
Neither holds far from the original. Here every step starts from the current choice of ranks, tries
cutting about `step` of the layers' MACs from a layer, measures the calibration loss of the resulting
model, and takes the cut with the smallest loss increase per MAC saved (like passes/prune/sensitivity.py).

To measure a try without building a model and a session per try, the model is "opened" once: every
candidate layer reads its weight (and bias) from a new graph input, and a try feeds the layer's low-rank
weight W' = A B (same shape as W, same function as the split pair up to float rounding).

Which tries are run: every cheaper option of every layer (saving at least one step) is ranked by a local
proxy, the layer's own error increase per MAC saved times its last measured (loss increase / layer error
increase); the best `candidates` are run through the network (a first cut from full rank saves little per
unit of error, so cuts of any depth are offered, not only the next rank).

Loss on the chosen outputs: "mse" (relative squared error, as in sensitivity.py), "cosine" (mean over
samples of 1 - cosine similarity), or "similarity" (relative squared error of the samples' cosine-similarity
matrix within each batch: the geometry that nearest-neighbour search sees).
"""
from __future__ import annotations

import itertools

import numpy as np
import onnx

from onnxslim.errors import SlimError
from onnxslim.metrics import ALLOCATION_LOSSES as LOSSES, allocation_loss
from onnxslim.runtime import TensorTap

from .layers import Layer
from .opened import OpenWeights
from .select import Option, allocate

class OpenModel:
    """The model with each candidate layer's weight and bias fed as graph inputs; `loss(choice)` on fixed batches."""

    def __init__(self, model: onnx.ModelProto, layers: list[Layer], feeds: list[dict], outputs, loss: str):
        if loss not in LOSSES:
            raise SlimError(f"low-rank allocation loss must be one of {LOSSES}, got {loss!r}")
        self.loss_kind = loss
        known = [o.name for o in model.graph.output]
        unknown = [name for name in outputs if name not in known]
        if unknown:
            raise SlimError(f"low-rank allocation: {unknown} are not outputs of the model; it has {known}")
        keep = set(outputs) or set(known)
        self.weights = OpenWeights(model, layers, keep)
        self.layers = self.weights.layers
        self.feeds = feeds
        self.tap = TensorTap(self.weights.model, [], hand_over=True)
        reference = TensorTap(model, [], hand_over=True)
        self.reference = [{k: v.astype(np.float64) for k, v in reference(feed).items() if k in keep} for feed in feeds]

    def set(self, name: str, w: np.ndarray, bias: np.ndarray | None) -> dict:
        """Stored arrays for layer `name` with effective weight w [in, out] and bias [out]."""
        return self.weights.set(name, w, bias)

    def loss(self, arrays: dict[str, dict]) -> float:
        """Loss of the model whose layers use `arrays` ({layer: stored arrays}, every layer present)."""
        extra = {k: v for per in arrays.values() for k, v in per.items()}
        losses = []
        for ref, feed in zip(self.reference, self.feeds):
            out = self.tap({**feed, **extra})
            for name, value in ref.items():
                losses.append(allocation_loss(self.loss_kind, value, out[name].astype(np.float64)))
        return float(np.mean(losses)) if losses else 0.0


def _tries(options, chosen, slope, wanted, per_layer, candidates, probe_error) -> list[tuple[str, Option]]:
    """The (layer, option) cuts to measure in one step: the best `candidates` by the local proxy (error
    increase per MAC saved times the layer's measured slope), plus one probe of each layer not measured yet."""
    known = [v for v in slope.values() if v is not None]
    default = float(np.median(known)) if known else 1.0

    def proxy(name, o):
        s = slope[name] if slope[name] is not None else default
        return (max(o.error - chosen[name].error, 0.0) * s + 1e-12) / (chosen[name].macs - o.macs)

    tries, firsts = [], []
    for name, opts in options.items():
        cur = chosen[name]
        cheaper = [o for o in opts if cur.macs - o.macs >= wanted]
        if not cheaper:
            continue
        tries += [(proxy(name, o), name, o) for o in sorted(cheaper, key=lambda o: proxy(name, o))[:per_layer]]
        if slope[name] is None:
            firsts.append((0.0, name, min(cheaper, key=lambda o: abs(o.error - cur.error - probe_error))))
    run, keys = [], set()
    for _, name, o in [*sorted(tries, key=lambda t: t[0])[:candidates], *firsts]:
        if (name, o.scheme, o.rank) not in keys:
            keys.add((name, o.scheme, o.rank))
            run.append((name, o))
    return run


def _best_cut(opened, run, effective, chosen, arrays, loss_now, slope) -> tuple:
    """(layer, option, its arrays, loss) of the measured cut with the smallest loss increase per MAC saved;
    every measurement also updates the layer's slope (loss increase per unit of layer error)."""
    best = None
    for name, o in run:
        trial = dict(arrays)
        trial[name] = effective(name, o)
        loss = opened.loss(trial)
        d_err = o.error - chosen[name].error
        if d_err > 1e-12:
            slope[name] = max(loss - loss_now, 0.0) / d_err
        rate = (loss - loss_now) / (chosen[name].macs - o.macs)
        if best is None or rate < best[0]:
            best = (rate, name, o, trial[name], loss)
    return best[1:]


def _relinearized_plan(opened, options, effective, budget, chosen, arrays, loss_now, slope, probe_error) -> dict:
    """Each layer's slope re-measured on the compressed model at the plan reached, then a Lagrangian
    allocation with those weights (any rank, no step granularity)."""
    for name, opts in options.items():
        cur = chosen[name]
        worse = [o for o in opts if o.error > cur.error + 1e-9]
        if not worse:
            continue
        o = min(worse, key=lambda o: abs(o.error - cur.error - probe_error / 2))
        trial = dict(arrays)
        trial[name] = effective(name, o)
        slope[name] = max(opened.loss(trial) - loss_now, 0.0) / (o.error - cur.error)
    return allocate(options, budget, {k: v for k, v in slope.items() if v is not None})


def greedy_allocate(opened: OpenModel, options: dict[str, list[Option]], effective, budget: float, *,
                    step: float = 0.005, candidates: int = 8, per_layer: int = 2, probe_error: float = 0.1,
                    refine: int = 2, progress=None) -> tuple[dict, list[dict]]:
    """Returns ({layer: chosen Option}, trace). `effective(name, option) -> stored arrays` (OpenModel.set).

    `budget`: MACs the layers in `options` may use in total. Layers start whole (their first option). A step
    cuts at least `step` of the layers' MACs (or what is still over budget). Tries: per layer its `per_layer`
    cheaper options of best proxy; the best `candidates` overall are measured, and every layer not measured
    yet is measured once at its option nearest `probe_error` (to learn its slope). Then up to `refine` times:
    every layer's slope is re-measured at the plan reached and a Lagrangian allocation with those weights is
    tried (it can choose any rank, the steps cannot), and kept if its measured loss is lower.
    """
    chosen = {name: opts[0] for name, opts in options.items()}
    arrays = {name: effective(name, chosen[name]) for name in options}
    total = float(sum(o.macs for o in chosen.values())) or 1.0
    quantum = step * total
    loss_now = opened.loss(arrays)
    slope = {name: None for name in options}  # measured loss increase per unit of layer error
    trace = [{"step": 0, "macs_fraction": 1.0, "loss": round(loss_now, 6)}]
    spent = total
    with progress("low-rank greedy allocation", total=max(1, int(np.ceil((total - budget) / quantum)))) as bar:
        while spent > budget * (1 + 1e-9):
            wanted = min(quantum, spent - budget)
            run = _tries(options, chosen, slope, wanted, per_layer, candidates, probe_error)
            if not run:
                break
            name, o, arr, loss = _best_cut(opened, run, effective, chosen, arrays, loss_now, slope)
            saved = chosen[name].macs - o.macs
            spent -= saved
            chosen[name] = o
            arrays[name] = arr
            loss_now = loss
            trace.append({"step": len(trace), "layer": name, "rank": o.rank, "macs_fraction": round(spent / total, 4),
                          "loss": round(float(loss_now), 6), "tried": len(run)})
            bar.update(max(1, int(round(saved / quantum))))
    for _ in range(refine):
        plan = _relinearized_plan(opened, options, effective, budget, chosen, arrays, loss_now, slope, probe_error)
        plan_arrays = {name: arrays[name] if plan[name] == chosen[name] else effective(name, plan[name]) for name in options}
        loss = opened.loss(plan_arrays)
        kept = loss < loss_now
        trace.append({"step": len(trace), "refine": "lagrangian on re-measured slopes", "loss": round(float(loss), 6),
                      "kept": bool(kept), "macs_fraction": round(sum(o.macs for o in plan.values()) / total, 4)})
        if not kept:
            break
        chosen, arrays, loss_now = plan, plan_arrays, loss
    return chosen, trace


def calibration_feeds(calib, batch_size: int, batches: int) -> list[dict]:
    return list(itertools.islice(calib.batches(batch_size), batches))
