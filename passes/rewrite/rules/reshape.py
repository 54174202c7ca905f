"""Reshape -> Reshape: the second reads the first's input (its target does not refer to the intermediate
shape: no 0 'copy' entries). A Reshape whose target is the input's own shape is removed.

A target may hold one -1 when every other entry is the input's dim at that position (a copy or the same
static dim): the element count then forces -1 to the remaining input dim. Where the other entries multiply
to 0 (a zero-sized dim) the spec leaves -1 undetermined and onnxruntime rejects the Reshape, so inputs the
original rejects are the only ones where removing it differs."""
from __future__ import annotations

from ..engine import Rule
from ..util import bypass, const, producer, replace_check, static_dims


class ReshapeChain(Rule):
    name = "reshape_chain"
    anchors = ("Reshape",)

    def check(self, node, ctx):
        first = producer(node.inputs[0], "Reshape")
        if first is None:
            return "input is not produced by a Reshape"
        shape = const(node.inputs[1])
        if shape is None:
            return "the target shape is computed at run time"
        if 0 in shape.reshape(-1).tolist() and not int(node.attrs.get("allowzero", 0)):
            return "the target copies dims (0) of the intermediate shape"
        return {"src": first.inputs[0]}

    def rewrite(self, node, match, ctx):
        node.inputs[0] = match["src"]


class ReshapeNoop(Rule):
    name = "reshape_noop"
    anchors = ("Reshape",)

    def check(self, node, ctx):
        shape = const(node.inputs[1])
        dims = static_dims(node.inputs[0])
        if shape is None or dims is None:
            return "target or input shape unknown"
        shape = shape.reshape(-1).tolist()
        if len(shape) != len(dims):
            return "the rank changes"
        allowzero = int(node.attrs.get("allowzero", 0))
        if shape.count(-1) > 1:
            return "more than one -1 in the target"
        for s, d in zip(shape, dims):
            copies = s == 0 and not allowzero
            if not (copies or s == -1 or (d is not None and s == d)):
                return "a target dim is neither a copy nor the input's static dim"
        reason = replace_check(node.outputs[0], node.inputs[0], ctx)
        return reason or {}

    def rewrite(self, node, match, ctx):
        bypass(node, node.inputs[0], ctx)
