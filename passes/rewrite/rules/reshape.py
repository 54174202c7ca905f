"""Reshape -> Reshape: the second reads the first's input; a 0 'copy' entry in its target is replaced by
what the first put at that position (its static size, or a copy of the same source dim). A Reshape whose target is the input's own shape is removed.

A target may hold one -1 when every other entry is the input's dim at that position (a copy or the same
static dim): the element count then forces -1 to the remaining input dim. Where the other entries multiply
to 0 (a zero-sized dim) the spec leaves -1 undetermined and onnxruntime rejects the Reshape, so inputs the
original rejects are the only ones where removing it differs."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..engine import RemoveNode, Rule
from ..util import const, produced_by, static_dims


class ReshapeChain(Rule, name="reshape_chain", anchors=("Reshape",)):
    def check(self, node, ctx):
        first = produced_by(node.inputs[0], "Reshape")
        shape = const(node.inputs[1])
        if shape is None:
            return "the target shape is computed at run time"
        shape = [int(v) for v in shape.reshape(-1)]
        if 0 in shape and not int(node.attrs.get("allowzero", 0)):
            resolved = _resolve_copies(shape, first)
            if resolved is None:
                return "the target copies dims (0) of the intermediate shape that the first Reshape does not fix"
            return {"src": first.inputs[0], "shape": resolved}
        return {"src": first.inputs[0], "shape": None}

    def rewrite(self, node, match, ctx):
        node.inputs[0] = match["src"]
        if match["shape"] is not None:
            node.inputs[1] = gs.Constant(ctx.fresh(f"{node.name or 'reshape'}_chained"), np.array(match["shape"], dtype=np.int64))


def _resolve_copies(shape: list[int], first) -> list[int] | None:
    """The second target with each 0 ("the intermediate's dim i") replaced by what the first Reshape put
    there: its own static entry, or 0 again when it copied the source's dim i (the same position)."""
    target = const(first.inputs[1])
    if target is None or int(first.attrs.get("allowzero", 0)):
        return None
    target = [int(v) for v in target.reshape(-1)]
    out = []
    for i, v in enumerate(shape):
        if v == 0:
            if i >= len(target) or target[i] < 0:
                return None  # the intermediate dim there is the first's -1: not known without the shapes
            v = target[i]
        out.append(v)
    return out


class ReshapeNoop(RemoveNode, name="reshape_noop", anchors=("Reshape",)):
    def why_not(self, node, ctx):
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
        return None
