"""A model whose exit weights are graph inputs, so one onnxruntime session evaluates any plan + repair.

By the pruning oracle (DESIGN.md), a pruned model computes what the original computes with the removed
channels zeroed at every exit. Feeding exit weights with zero columns (and repaired values in the kept
ones) therefore evaluates a candidate plan without rewriting the graph or building a session per try,
which is what makes step-by-step sensitivity and the structure search affordable.

The loss compares outputs with the original model's: KL divergence of the softmax for [batch, classes]
outputs (what decides top-1), normalized squared error otherwise.
"""
from __future__ import annotations

import numpy as np
import onnx

from onnxslim.activations import make_session, with_outputs
from onnxslim.errors import SlimError

from .exits import Exit


def weight_name(exit: Exit) -> str:
    return f"slim::w::{exit.node}"


def bias_name(exit: Exit) -> str:
    return f"slim::b::{exit.node}"


def parametric_model(model: onnx.ModelProto, exits: list[Exit]) -> onnx.ModelProto:
    """A copy of `model` (the cleaned one the exits were found in) where every exit's weight, and bias when
    the op has one, is a float graph input."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    by_name = {e.node: e for e in exits}
    bias_adds = {e.bias_add[0]: e for e in exits if e.bias_add is not None}
    replaced = set()
    for node in copy.graph.node:
        if node.name in bias_adds:  # a MatMul exit's bias: the constant of the Add after it
            exit = bias_adds[node.name]
            replaced.add(node.input[exit.bias_add[1]])
            node.input[exit.bias_add[1]] = bias_name(exit)
            copy.graph.input.append(onnx.helper.make_tensor_value_info(bias_name(exit), onnx.TensorProto.FLOAT, [exit.w2.shape[0]]))
        exit = by_name.get(node.name)
        if exit is None:
            continue
        replaced.add(node.input[1])
        node.input[1] = weight_name(exit)
        copy.graph.input.append(onnx.helper.make_tensor_value_info(weight_name(exit), onnx.TensorProto.FLOAT, list(exit.weight_shape)))
        if exit.has_bias and exit.bias_add is None:
            if len(node.input) > 2 and node.input[2]:
                replaced.add(node.input[2])
                node.input[2] = bias_name(exit)
            else:
                while len(node.input) < 2:
                    node.input.append("")
                node.input.append(bias_name(exit))
            copy.graph.input.append(onnx.helper.make_tensor_value_info(bias_name(exit), onnx.TensorProto.FLOAT, [exit.w2.shape[0]]))
    still_used = {i for n in copy.graph.node for i in n.input}
    keep = [t for t in copy.graph.initializer if t.name not in replaced or t.name in still_used]
    del copy.graph.initializer[:]
    copy.graph.initializer.extend(keep)
    return copy


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
            out[weight_name(e)] = np.ascontiguousarray(e.to_weight(self.w2[e.node]), dtype=np.float32)
            if e.has_bias:
                out[bias_name(e)] = self.bias[e.node].astype(np.float32)
        return out


class Evaluator:
    """Runs the parametric model on a fixed, small subset of calibration batches and scores a State
    against the original model's outputs on the same batches."""

    def __init__(self, model: onnx.ModelProto, exits: list[Exit], batches: list[dict]):
        self.exits = exits
        self.model = parametric_model(model, exits)
        self.session = make_session(self.model)
        self.output_names = [o.name for o in self.model.graph.output]
        self.batches = batches
        original = make_session(model)
        self.reference = [dict(zip(self.output_names, original.run(self.output_names, feed))) for feed in batches]
        self.evaluations = 0

    def outputs(self, state: State) -> list[dict]:
        weights = state.feeds()
        results = []
        for feed in self.batches:
            try:
                values = self.session.run(self.output_names, {**feed, **weights})
            except Exception as err:
                raise SlimError(f"onnxruntime failed on the parametric model: {str(err).splitlines()[0]}") from None
            results.append(dict(zip(self.output_names, values)))
        self.evaluations += 1
        return results

    def loss(self, state: State) -> float:
        return output_loss(self.reference, self.outputs(state))

    def fidelity(self, state: State) -> dict:
        return fidelity_summary(self.reference, self.outputs(state))


_TAPPED: dict = {}   # (id(model), names) -> (model, session, output names), most recent last
_TAPPED_KEEP = 4     # the sensitivity allocation taps the same two models every step (30 sessions built
                     # for EfficientNet-Lite0 at 70%, 2% of the pass's time); repair waves each tap others


def tapped_session(model: onnx.ModelProto, names: list[str]):
    """A session of `model` whose outputs also include `names`, and its output names; the last few are
    reused (the model object is kept with its session, so its id cannot be recycled meanwhile)."""
    key = (id(model), tuple(names))
    if key in _TAPPED:
        entry = _TAPPED.pop(key)
        _TAPPED[key] = entry
        return entry[1], entry[2]
    tapped = with_outputs(model, names)
    entry = (model, make_session(tapped, basic=_fusion_loses_tap(model, names)), [o.name for o in tapped.graph.output])
    _TAPPED[key] = entry
    while len(_TAPPED) > _TAPPED_KEEP:
        _TAPPED.pop(next(iter(_TAPPED)))
    return entry[1], entry[2]


def clear_tapped() -> None:
    """Drop the reused sessions (end of a pass: they hold the models' weights)."""
    _TAPPED.clear()


def _fusion_loses_tap(model: onnx.ModelProto, names: list[str]) -> bool:
    """True when a tapped tensor is the output of a Conv whose weight is a graph input and that feeds an Add
    (a projection shortcut in the parametric model): onnxruntime's Conv+Add fusion then fails to load the
    session ("Failed to find node output"), so such a session gets basic optimizations only."""
    graph_inputs = {i.name for i in model.graph.input}
    wanted = set(names)
    conv_taps = {n.output[0] for n in model.graph.node
                 if n.op_type == "Conv" and n.output[0] in wanted and len(n.input) > 1 and n.input[1] in graph_inputs}
    return any(n.op_type == "Add" and conv_taps.intersection(n.input) for n in model.graph.node)


def _is_logits(a: np.ndarray) -> bool:
    return a.ndim == 2 and a.shape[1] > 1 and np.issubdtype(a.dtype, np.floating)


def _log_softmax(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    a = a - a.max(axis=1, keepdims=True)
    return a - np.log(np.exp(a).sum(axis=1, keepdims=True))


def output_loss(reference: list[dict], outputs: list[dict]) -> float:
    """Sum over outputs of KL(softmax(ref) || softmax(new)) for [batch, classes] outputs, else squared error
    over the reference's variance; averaged over samples."""
    total = 0.0
    for name in reference[0]:
        ref = [np.asarray(r[name]) for r in reference]
        new = [np.asarray(o[name]) for o in outputs]
        if not np.issubdtype(ref[0].dtype, np.floating):
            continue
        if _is_logits(ref[0]):
            kl = [np.sum(np.exp(_log_softmax(a)) * (_log_softmax(a) - _log_softmax(b)), axis=1) for a, b in zip(ref, new)]
            total += float(np.mean(np.concatenate(kl)))
        else:
            err = sum(float(((a.astype(np.float64) - b) ** 2).sum()) for a, b in zip(ref, new))
            flat = np.concatenate([a.reshape(-1).astype(np.float64) for a in ref])
            total += err / max(float(((flat - flat.mean()) ** 2).sum()), 1e-30)
    if not np.isfinite(total):
        return float("inf")
    return total


def _rows(a) -> np.ndarray:
    """[samples, features]; explicit sizes, since -1 is ambiguous for an empty output (a detector finding nothing)."""
    a = np.asarray(a)
    return a.reshape(len(a), int(np.prod(a.shape[1:]))) if a.ndim else a.reshape(1, 1)


def fidelity_summary(reference: list[dict], outputs: list[dict]) -> dict:
    """loss (see output_loss), and for [batch, classes] outputs the top-1 agreement; cosine per sample."""
    summary = {"loss": round(output_loss(reference, outputs), 6)}
    for name in reference[0]:
        ref = np.concatenate([_rows(r[name]) for r in reference]).astype(np.float64)
        new = np.concatenate([_rows(o[name]) for o in outputs]).astype(np.float64)
        cos = (ref * new).sum(1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(new, axis=1), 1e-30)
        entry = {"cosine": round(float(np.mean(cos)), 6)}
        if _is_logits(np.asarray(reference[0][name])):
            entry["top1_agreement"] = round(float(np.mean(ref.argmax(1) == new.argmax(1))), 4)
        summary[name] = entry
    return summary
