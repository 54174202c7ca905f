"""Unsqueeze -> Unsqueeze and Squeeze -> Squeeze merge into one node with the combined axes;
Unsqueeze -> Squeeze of the same axes is removed."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..engine import Rule
from ..util import axes_of, bypass, normalize_axes, producer, rank, replace_check


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


def _set_axes(node, axes: list[int], ctx) -> None:
    if "axes" in node.attrs:
        node.attrs["axes"] = axes
    else:
        node.inputs[1] = gs.Constant(ctx.fresh(f"{node.name or node.op}_axes_merged"), np.array(axes, dtype=np.int64))


class UnsqueezeChain(Rule):
    name = "unsqueeze_chain"
    anchors = ("Unsqueeze",)

    def check(self, node, ctx):
        first = producer(node.inputs[0], "Unsqueeze")
        if first is None:
            return "input is not produced by an Unsqueeze"
        r = rank(first.inputs[0])
        a1 = _axes(first, None if r is None else r + len(axes_of(first, 1, ctx) or []), ctx)
        r1 = rank(node.inputs[0])
        a2 = _axes(node, None if r1 is None else r1 + len(axes_of(node, 1, ctx) or []), ctx)
        if a1 is None or a2 is None:
            return "axes unknown or negative with unknown rank"
        taken = set(a2)  # the first's axes land on the final positions not taken by the second's
        return {"src": first.inputs[0], "axes": sorted(taken | {_nth_free(taken, p) for p in a1})}

    def rewrite(self, node, match, ctx):
        node.inputs[0] = match["src"]
        _set_axes(node, match["axes"], ctx)


class SqueezeChain(Rule):
    name = "squeeze_chain"
    anchors = ("Squeeze",)

    def check(self, node, ctx):
        first = producer(node.inputs[0], "Squeeze")
        if first is None:
            return "input is not produced by a Squeeze"
        a1 = _axes(first, rank(first.inputs[0]), ctx)
        a2 = _axes(node, rank(node.inputs[0]), ctx)
        if a1 is None or a2 is None:
            return "axes unknown (squeeze-all needs static shapes) or negative with unknown rank"
        taken = set(a1)  # the second's axes index what the first left: map back to the input's axes
        return {"src": first.inputs[0], "axes": sorted(taken | {_nth_free(taken, p) for p in a2})}

    def rewrite(self, node, match, ctx):
        node.inputs[0] = match["src"]
        _set_axes(node, match["axes"], ctx)


class UnsqueezeSqueeze(Rule):
    name = "unsqueeze_squeeze"
    anchors = ("Squeeze",)

    def check(self, node, ctx):
        first = producer(node.inputs[0], "Unsqueeze")
        if first is None:
            return "input is not produced by an Unsqueeze"
        r = rank(node.inputs[0])
        a1, a2 = _axes(first, r, ctx), _axes(node, r, ctx)
        if a1 is None or a2 is None or a1 != a2:
            return "the Squeeze does not undo the Unsqueeze"
        return replace_check(node.outputs[0], first.inputs[0], ctx) or {"src": first.inputs[0]}

    def rewrite(self, node, match, ctx):
        bypass(node, match["src"], ctx)
