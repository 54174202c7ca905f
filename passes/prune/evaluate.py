"""A model whose exit weights are graph inputs, so one onnxruntime session evaluates any plan + repair.

By the pruning oracle (DESIGN.md), a pruned model computes what the original computes with the removed
channels zeroed at every exit. Feeding exit weights with zero columns (and repaired values in the kept
ones) therefore evaluates a candidate plan without rewriting the graph or building a session per try,
which is what makes step-by-step sensitivity and the structure search affordable.

The loss compares outputs with the original model's (metrics.plan_loss): KL divergence of the softmax for
[batch, classes] outputs (what decides top-1), normalized squared error otherwise.
"""
from __future__ import annotations

import numpy as np
import onnx

from onnxslim.metrics import plan_fidelity, plan_loss
from onnxslim.runtime import run_once, session, weights_as_inputs

from .exits import Exit
from .suffix import Slicer, suffix_outputs


def weight_name(exit: Exit) -> str:
    return f"slim::w::{exit.node}"


def bias_name(exit: Exit) -> str:
    return f"slim::b::{exit.node}"


def parametric_model(model: onnx.ModelProto, exits: list[Exit]) -> onnx.ModelProto:
    """A copy of `model` (the cleaned one the exits were found in) where every exit's weight, and bias when
    the op has one, is a float graph input."""
    first_output = {n.name: n.output[0] for n in model.graph.node if n.output}
    slots = {}
    for e in exits:
        slots.setdefault(first_output[e.node], {})[1] = (weight_name(e), onnx.TensorProto.FLOAT, e.weight_shape)
        if e.bias_add is not None:  # a MatMul exit's bias: the constant operand of the Add after it
            slots.setdefault(e.output, {})[e.bias_add[1]] = (bias_name(e), onnx.TensorProto.FLOAT, [e.w2.shape[0]])
        elif e.has_bias:
            slots[first_output[e.node]][2] = (bias_name(e), onnx.TensorProto.FLOAT, [e.w2.shape[0]])
    return weights_as_inputs(model, slots)


def exit_feeds(exit: Exit, w2: np.ndarray, bias: np.ndarray) -> dict:
    """The parametric model's inputs for one exit's [outputs, features] weights and bias."""
    out = {weight_name(exit): np.ascontiguousarray(exit.to_weight(w2), dtype=np.float32)}
    if exit.has_bias:
        out[bias_name(exit)] = bias.astype(np.float32)
    return out


class State:
    """Current weights of every exit ([outputs, features] float64 and bias), starting from the original."""

    def __init__(self, exits: list[Exit]):
        self.exits = exits
        self.w2 = {e.node: e.w2.copy() for e in exits}
        self.bias = {e.node: (e.bias.astype(np.float64).copy() if e.bias is not None else np.zeros(e.w2.shape[0])) for e in exits}

    def copy(self) -> "State":
        other = State.__new__(State)
        other.exits = self.exits
        other.w2 = {k: v.copy() for k, v in self.w2.items()}
        other.bias = {k: v.copy() for k, v in self.bias.items()}
        return other

    def feeds(self) -> dict:
        out = {}
        for e in self.exits:
            out.update(exit_feeds(e, self.w2[e.node], self.bias[e.node]))
        return out

    def with_changes(self, change: dict) -> "State":
        """A copy with `change` = {exit node: (w2, bias)} applied."""
        other = self.copy()
        for node, (w2, bias) in change.items():
            other.w2[node], other.bias[node] = w2, bias
        return other


class Evaluator:
    """Runs the parametric model on a fixed, small subset of calibration batches and scores a State
    against the original model's outputs on the same batches."""

    def __init__(self, model: onnx.ModelProto, exits: list[Exit], batches: list[dict]):
        self.exits = exits
        self.model = parametric_model(model, exits)
        self.session = session(self.model)
        self.output_names = [o.name for o in self.model.graph.output]
        self.batches = batches
        original = session(model)
        self.reference = [dict(zip(self.output_names, original.run(self.output_names, feed))) for feed in batches]
        self.evaluations = 0
        self._slicer = None

    def outputs(self, state: State) -> list[dict]:
        weights = state.feeds()
        results = []
        for feed in self.batches:
            values = run_once(self.session, {**feed, **weights}, self.output_names, "onnxruntime failed on the parametric model")
            results.append(dict(zip(self.output_names, values)))
        self.evaluations += 1
        return results

    def loss(self, state: State) -> float:
        return plan_loss(self.reference, self.outputs(state))

    def losses(self, base: State, changes: list[dict]) -> list[float]:
        """The loss of `base` with each change ({exit node: (w2, bias)}) applied, running per change only the
        network after its first changed exit (suffix.py); equal to loss(base.with_changes(change))."""
        if self._slicer is None:
            names = {weight_name(e) for e in self.exits} | {bias_name(e) for e in self.exits if e.has_bias}
            self._slicer = Slicer(self.model, names)
        if not self._slicer.sliceable:
            return [self.loss(base.with_changes(c)) for c in changes]
        by_node = {e.node: e for e in self.exits}
        overrides = [{k: v for node, (w2, bias) in c.items() for k, v in exit_feeds(by_node[node], w2, bias).items()}
                     for c in changes]
        outputs = suffix_outputs(self._slicer, self.batches, base.feeds(), overrides)
        self.evaluations += len(changes)
        return [plan_loss(self.reference, o) for o in outputs]

    def fidelity(self, state: State) -> dict:
        return plan_fidelity(self.reference, self.outputs(state))
