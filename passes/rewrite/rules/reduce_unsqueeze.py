"""Reduce*(keepdims=0) -> Unsqueeze of the same axes: one Reduce with keepdims=1 (ArgMax/ArgMin too)."""
from __future__ import annotations

from ..engine import Rule
from ..util import axes_of, normalize_axes, only_consumer, producer, rank, take_output

REDUCES = ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
           "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin")


class ReduceUnsqueeze(Rule, name="reduce_unsqueeze", anchors=("Unsqueeze",)):
    def check(self, node, ctx):
        red = producer(node.inputs[0], REDUCES)
        if red is None:
            return "input is not produced by a Reduce"
        if not only_consumer(node.inputs[0], ctx):
            return "the reduced tensor has other consumers"
        if int(red.attrs.get("keepdims", 1)):
            return "the Reduce keeps its dims already"
        r = rank(red.inputs[0])
        if red.op.startswith("Arg"):
            raxes = [int(red.attrs.get("axis", 0))]
        else:
            raxes = axes_of(red, 1, ctx)
            if isinstance(raxes, str) or not raxes:
                return "the Reduce axes are unknown or empty (all axes / noop_with_empty_axes)"
        uaxes = axes_of(node, 1, ctx)
        if isinstance(uaxes, str) or uaxes is None:
            return "the Unsqueeze axes are not constant"
        a, b = normalize_axes(raxes, r), normalize_axes(uaxes, r)
        if a is None or b is None or a != b:
            return "the Unsqueeze axes are not the reduced axes"
        return {"red": red}

    def rewrite(self, node, match, ctx):
        red = match["red"]
        red.attrs["keepdims"] = 1
        take_output(red, node)
