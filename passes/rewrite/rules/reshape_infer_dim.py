"""Reshape whose target is Concat(pieces) with every piece constant but one single-element run-time piece
(typically Unsqueeze(Gather(Shape(x), i))): that piece becomes -1.

Why it is exact: a valid Reshape keeps the element count, so when every other entry is a known positive
constant (no 0 'copy', no -1), the run-time entry d is the only value with d * prod(others) = size, which is
what -1 computes. The Concat then folds to a constant and the Shape/Gather/Unsqueeze chain becomes dead.
Inputs the original would reject (a count that does not divide) are the only ones where the two differ."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..engine import Rule
from ..util import const, producer, static_dims


class ReshapeInferDim(Rule, name="reshape_infer_dim", anchors=("Reshape",)):
    def check(self, node, ctx):
        if int(node.attrs.get("allowzero", 0)):
            return "allowzero: a 0 entry means size 0"
        concat = producer(node.inputs[1], "Concat")
        if concat is None:
            return "the target shape is not a Concat"
        dynamic, known = [], []
        for i, piece in enumerate(concat.inputs):
            value = const(piece)
            if value is None:
                dynamic.append(i)
            else:
                known += value.reshape(-1).tolist()
        if len(dynamic) != 1:
            return f"{len(dynamic)} run-time pieces in the target (one can be inferred)"
        if static_dims(concat.inputs[dynamic[0]]) != [1]:
            return "the run-time piece is not known to hold one element"
        if any(int(v) <= 0 for v in known):
            return "a constant entry is 0 or -1: the run-time entry is not the only unknown"
        return {"concat": concat, "index": dynamic[0]}

    def rewrite(self, node, match, ctx):
        concat = match["concat"]
        minus_one = gs.Constant(ctx.fresh(f"{concat.name or 'concat'}_inferred"), np.array([-1], dtype=np.int64))
        pieces = list(concat.inputs)
        pieces[match["index"]] = minus_one
        shared = len(node.inputs[1].outputs) > 1
        if shared:  # another node reads this target: give this Reshape a Concat of its own
            out = gs.Variable(ctx.fresh(f"{node.name or 'reshape'}_shape"), dtype=np.int64, shape=node.inputs[1].shape)
            ctx.graph.nodes.append(gs.Node("Concat", name=ctx.fresh(concat.name or "concat"), attrs=dict(concat.attrs),
                                           inputs=pieces, outputs=[out]))
            node.inputs[1] = out
        else:
            concat.inputs.clear()
            concat.inputs.extend(pieces)
