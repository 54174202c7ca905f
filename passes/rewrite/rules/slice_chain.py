"""Slice -> Slice on disjoint axes: the second reads the first's input and slices both sets of axes at once.

Why it is exact: a Slice acts on each axis it names independently and leaves the other axes as they are, so
slicing axes A and then axes B (A and B disjoint) picks the same elements as one Slice over A + B. When the
first Slice feeds only such Slices it becomes dead (two nodes -> one); otherwise nothing grows."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..engine import Rule
from ..util import NoMatch, produced_by, rank
from .slice_noop import slice_params


def _inputs(node, r):
    """(starts, ends, axes with negatives resolved, steps) as int lists."""
    if "starts" in node.attrs:
        raise NoMatch("slice parameters are attributes (opset < 10)")
    starts, ends, axes, steps = slice_params(node)
    axes = list(range(len(starts))) if axes is None else axes
    if any(a < 0 for a in axes):
        if r is None:
            raise NoMatch("a negative axis and the rank is unknown")
        axes = [a + r for a in axes]
    return starts, ends, axes, steps or [1] * len(starts)


class SliceChain(Rule, name="slice_chain", anchors=("Slice",)):
    def check(self, node, ctx):
        first = produced_by(node.inputs[0], "Slice")
        r = rank(first.inputs[0])
        outer, inner = _inputs(node, r), _inputs(first, r)
        if set(outer[2]) & set(inner[2]) or len(set(outer[2])) != len(outer[2]):
            return "the two Slices share an axis"
        return {"src": first.inputs[0], "params": [a + b for a, b in zip(inner, outer)]}

    def rewrite(self, node, match, ctx):
        base = node.name or "slice"
        names = ("starts", "ends", "axes", "steps")
        consts = [gs.Constant(ctx.fresh(f"{base}_{n}"), np.array(v, dtype=np.int64)) for n, v in zip(names, match["params"])]
        node.inputs.clear()
        node.inputs.extend([match["src"], *consts])
