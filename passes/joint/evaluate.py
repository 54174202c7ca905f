"""Scoring and repairing a joint plan on the joint model (exit and split-candidate weights as inputs): the
prune pass's Evaluator and least-squares repair, fed the split layers' weights too, so every loss and every
refit sees the splits (the prune pass's own model does not have them)."""
from __future__ import annotations

from onnxslim.metrics import plan_loss
from onnxslim.runtime import session
from onnxslim.passes.prune.evaluate import Evaluator
from onnxslim.passes.prune.repair import collect, solve, waves
from onnxslim.passes.prune.suffix import Slicer, suffix_outputs

from .units import JointState


class JointEvaluator(Evaluator):
    """Evaluator of the joint model: `outputs`, `loss` and `fidelity` as the prune pass's, on a JointState;
    `losses` takes overrides as {joint model input: array}."""

    def __init__(self, model, joint, batches):
        self.exits = []
        self.model = joint
        self.session = session(joint)
        self.output_names = [o.name for o in joint.graph.output]
        self.batches = batches
        original = session(model)
        self.reference = [dict(zip(self.output_names, original.run(self.output_names, feed))) for feed in batches]
        self.evaluations = 0
        original_inputs = {i.name for i in model.graph.input}
        self._slicer = Slicer(joint, {i.name for i in joint.graph.input if i.name not in original_inputs})

    def losses(self, base: JointState, overrides: list[dict]) -> list[float]:
        if not self._slicer.sliceable:
            feeds = base.feeds()
            return [plan_loss(self.reference, self._run({**feeds, **o})) for o in overrides]
        outputs = suffix_outputs(self._slicer, self.batches, base.feeds(), overrides)
        self.evaluations += len(overrides)
        return [plan_loss(self.reference, o) for o in outputs]

    def _run(self, weights: dict) -> list[dict]:
        self.evaluations += 1
        return [dict(zip(self.output_names, self.session.run(self.output_names, {**feed, **weights}))) for feed in self.batches]


def joint_repair(model, joint, targets, plan, current: JointState, dataset, cfg, seed: int, loss, progress) -> dict:
    """The prune pass's wave-by-wave repair of the cut groups' exits (passes/prune/repair.py), with inputs
    from the joint model (splits in place) and targets from the original; a wave that raises `loss` is undone."""
    report, state = {}, current.state
    if not targets:
        return report
    chunks = waves(targets, cfg.repair_passes)
    best = loss(current)
    with progress("repairing", total=-(-len(dataset) // cfg.calib_batch) * len(chunks)) as bar:
        for i, chunk in enumerate(chunks):
            stats = collect(model, joint, chunk, current, dataset.batches(cfg.calib_batch), per_sample=cfg.positions_per_sample,
                            seed=seed + i, progress=bar, residual=cfg.residual_targets, together={e.node for e in chunk})
            before = {e.node: (state.w2[e.node], state.bias[e.node]) for e in chunk}
            for e in chunk:
                w2, bias = solve(e, stats[e.node], e.kept(plan), cfg.ridge, prior_rows=cfg.repair_prior)
                if stats[e.node].relative_error(w2, bias) < stats[e.node].relative_error(*before[e.node]):
                    state.w2[e.node], state.bias[e.node] = w2, bias
            now = loss(current)
            if now > best:
                for node, (w2, bias) in before.items():
                    state.w2[node], state.bias[node] = w2, bias
            else:
                best = now
            report[f"wave {i + 1}"] = round(float(min(now, best)), 6)
    return report
