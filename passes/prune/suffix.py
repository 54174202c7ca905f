"""Evaluating plans that differ from a base state in a few exits by running only the network after them.

A sensitivity step scores up to 8 candidate cuts, each changing one group's exit weights in the same base
state; everything computed before a candidate's first changed exit is the base state's. So per batch the
candidates are taken in network order: the base weights run from the last cut to this candidate's cut
(a segment), and the candidate's weights run from there to the outputs (a suffix). A step then costs one
pass of the base up to its last candidate plus the candidates' suffixes, instead of one whole pass each.

Segments and suffixes are slices of the parametric model (nodes in their topological order); a slice's
inputs are the tensors crossing its start (the cut) and the exit weights it reads. Their onnxruntime
sessions are built once per (start, end) and reused across steps. The operations are the same as in the
whole model, so the outputs are too (tests/test_prune_suffix.py compares them with whole-model runs).
onnxruntime has no API to start a session's run from inner tensors, hence the slices.
"""
from __future__ import annotations

from collections import OrderedDict

import onnx

from onnxslim.runtime import elem_types, run_once, session

_KEEP = 48  # sessions kept: EfficientNet-Lite0 at 70% of the MACs uses about 40 (start, end) pairs


class Slicer:
    """Slices of `model` between node positions, and which tensors cross each position."""

    def __init__(self, model: onnx.ModelProto, weight_inputs: set[str], basic: bool = False):
        self.model = model
        self.basic = basic  # basic optimizations only, as the whole model's session has (runtime.tapped_session)
        self.nodes = list(model.graph.node)
        self.weights = weight_inputs
        self.data_inputs = [i.name for i in model.graph.input if i.name not in weight_inputs]
        self.outputs = [o.name for o in model.graph.output]
        self.initializers = {t.name: t for t in model.graph.initializer}
        self.types = elem_types(model)
        produced = {name: -1 for name in self.data_inputs}
        last_use: dict[str, int] = {}
        first_use: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            for name in node.input:
                last_use[name] = i
                first_use.setdefault(name, i)
            for name in node.output:
                produced[name] = i
        for name in self.outputs:  # graph outputs are read after the last node
            last_use[name] = len(self.nodes)
        self.produced, self.last_use, self.first_use = produced, last_use, first_use
        # an If/Loop body reads outer tensors without naming them as inputs: such models are not sliced
        self.sliceable = not any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                                 for n in self.nodes for a in n.attribute)
        self._sessions: OrderedDict = OrderedDict()

    def start_of(self, weight_names) -> int:
        """The first node position reading any of `weight_names`."""
        return min((self.first_use[n] for n in weight_names if n in self.first_use), default=0)

    def cut(self, position: int) -> list[str]:
        """Tensors produced before `position` (or fed) and read at or after it: what a slice starting there needs."""
        return [t for t, p in self.produced.items() if p < position <= self.last_use.get(t, -1) and t not in self.weights]

    def run(self, start: int, end: int, carried: dict, weights: dict) -> dict:
        """Run nodes [start, end) on `carried` (the cut at start) and `weights`; returns the cut at `end`
        (at the end: the graph outputs)."""
        sess, inputs, outputs = self.part(start, end)
        feed = {n: carried[n] if n in carried else weights[n] for n in inputs}
        values = run_once(sess, feed, outputs, "onnxruntime failed on the parametric model")
        got = dict(zip(outputs, values))
        wanted = self.outputs if end >= len(self.nodes) else self.cut(end)
        return {n: got[n] if n in got else carried[n] for n in wanted}

    def part(self, start: int, end: int):
        """(session, inputs, outputs) of nodes [start, end), built once and kept (the last few)."""
        key = (start, end)
        if key in self._sessions:
            self._sessions.move_to_end(key)
            return self._sessions[key]
        nodes = self.nodes[start:end]
        read = {n for node in nodes for n in node.input if n}
        made = {n for node in nodes for n in node.output}
        inputs = [n for n in self.cut(start) if n in read] + sorted(n for n in self.weights if n in read)
        wanted = self.outputs if end >= len(self.nodes) else self.cut(end)
        outputs = [n for n in wanted if n in made]
        graph = onnx.helper.make_graph(
            nodes, f"slice_{start}_{end}",
            [onnx.helper.make_tensor_value_info(n, self.types.get(n, onnx.TensorProto.FLOAT), None) for n in inputs],
            [onnx.helper.make_tensor_value_info(n, self.types.get(n, onnx.TensorProto.FLOAT), None) for n in outputs],
            [self.initializers[n] for n in read if n in self.initializers])
        part = onnx.helper.make_model(graph, opset_imports=self.model.opset_import, ir_version=self.model.ir_version)
        part.functions.extend(self.model.functions)
        # one arena shared by all: ~40 sessions each keeping its own peak activations doubled the pass's
        # peak memory, and without an arena every run faulted its buffers in again
        entry = (session(part, arena="shared", basic=self.basic), inputs, outputs)
        self._sessions[key] = entry
        while len(self._sessions) > _KEEP:
            self._sessions.popitem(last=False)
        return entry


def suffix_outputs(slicer: Slicer, batches: list[dict], base: dict, changes: list[dict]) -> list[list[dict]]:
    """Per change (a {weight input: array} override of the `base` feeds), the graph outputs on every batch."""
    starts = [slicer.start_of(c) for c in changes]
    order = sorted(range(len(changes)), key=lambda i: starts[i])
    results: list[list[dict]] = [[] for _ in changes]
    for feed in batches:
        carried, at = {n: feed[n] for n in slicer.data_inputs}, 0
        for i in order:
            if starts[i] > at:
                carried, at = slicer.run(at, starts[i], carried, base), starts[i]
            results[i].append(slicer.run(at, len(slicer.nodes), carried, {**base, **changes[i]}))
    return results
