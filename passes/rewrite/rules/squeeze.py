"""Unsqueeze -> Unsqueeze and Squeeze -> Squeeze merge into one node with the combined axes;
Unsqueeze -> Squeeze of the same axes is removed."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..engine import Rule
from ..util import axes_of, bypass, normalize_axes, produced_by, rank, replace_check


def _nth_free(taken: set[int], n: int) -> int:
    """The n-th (0-based) non-negative integer not in `taken`."""
    i = -1
    while n >= 0:
        i += 1
        if i not in taken:
            n -= 1
    return i


def _axes(node, r_norm, ctx):
    axes = axes_of(node, 1, ctx)
    if axes is None or isinstance(axes, str):
        return None
    return normalize_axes(axes, r_norm)


def _own_axes(node, ctx):
    """The node's axes made non-negative: an Unsqueeze's index its output, a Squeeze's its input."""
    r = rank(node.inputs[0])
    if node.op == "Unsqueeze" and r is not None:
        r += len(axes_of(node, 1, ctx) or [])
    return _axes(node, r, ctx)


class _AxesChain(Rule):
    """X -> X of one op: the second node reads the first's input with the combined axes."""
    unknown = ""  # the reason when an axis is not known

    def check(self, node, ctx):
        first = produced_by(node.inputs[0], node.op)
        a1, a2 = _own_axes(first, ctx), _own_axes(node, ctx)
        if a1 is None or a2 is None:
            return self.unknown
        # Unsqueeze: the first's axes land on the final positions the second's leave free; Squeeze: the
        # second's axes index what the first left, mapped back to the input's axes
        taken, placed = (set(a2), a1) if node.op == "Unsqueeze" else (set(a1), a2)
        return {"src": first.inputs[0], "axes": sorted(taken | {_nth_free(taken, p) for p in placed})}

    def rewrite(self, node, match, ctx):
        node.inputs[0] = match["src"]
        if "axes" in node.attrs:
            node.attrs["axes"] = match["axes"]
        else:
            node.inputs[1] = gs.Constant(ctx.fresh(f"{node.name or node.op}_axes_merged"), np.array(match["axes"], dtype=np.int64))


class UnsqueezeChain(_AxesChain, name="unsqueeze_chain", anchors=("Unsqueeze",)):
    unknown = "axes unknown or negative with unknown rank"


class SqueezeChain(_AxesChain, name="squeeze_chain", anchors=("Squeeze",)):
    unknown = "axes unknown (squeeze-all needs static shapes) or negative with unknown rank"


class UnsqueezeSqueeze(Rule, name="unsqueeze_squeeze", anchors=("Squeeze",)):
    def check(self, node, ctx):
        first = produced_by(node.inputs[0], "Unsqueeze")
        r = rank(node.inputs[0])
        a1, a2 = _axes(first, r, ctx), _axes(node, r, ctx)
        if a1 is None or a2 is None or a1 != a2:
            return "the Squeeze does not undo the Unsqueeze"
        return replace_check(node.outputs[0], first.inputs[0], ctx) or {"src": first.inputs[0]}

    def rewrite(self, node, match, ctx):
        bypass(node, match["src"], ctx)
