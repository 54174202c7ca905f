"""x*1, 1*x, x+0, 0+x, x-0, x/1 are x when the constant changes neither x's shape (broadcast) nor its type.
(x + 0 turns -0.0 into +0.0, which compares equal.)"""
from __future__ import annotations

import numpy as np

from ..engine import Rule
from ..util import broadcast_keeps_shape, bypass, const, dtype, replace_check

_NEUTRAL = {"Mul": (1, True), "Add": (0, True), "Sub": (0, False), "Div": (1, False)}  # value, commutative


class NeutralElement(Rule, name="neutral_element", anchors=tuple(_NEUTRAL)):
    def check(self, node, ctx):
        value, commutative = _NEUTRAL[node.op]
        a, b = node.inputs[0], node.inputs[1]
        for x, c in ((a, const(b)),) + (((b, const(a)),) if commutative else ()):
            if c is None or const(x) is not None:  # both constant: folding's job
                continue
            if c.size == 0 or not np.all(c == value):
                continue
            if dtype(x) is None or c.dtype != dtype(x):
                return "the constant's type differs from the input's"
            if not broadcast_keeps_shape(x, c):
                return "the constant would broadcast the input"
            return replace_check(node.outputs[0], x, ctx) or {"x": x}
        return f"no constant operand equal to {value}"

    def rewrite(self, node, match, ctx):
        bypass(node, match["x"], ctx)
