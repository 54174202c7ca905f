"""An Expand whose target shape leaves the input's shape unchanged is removed."""
from __future__ import annotations

import numpy as np

from ..engine import Rule
from ..util import broadcast_keeps_shape, bypass, const, replace_check


class ExpandNoop(Rule):
    name = "expand_noop"
    anchors = ("Expand",)

    def check(self, node, ctx):
        shape = const(node.inputs[1])
        if shape is None:
            return "the target shape is computed at run time"
        # broadcasting a tensor of the target shape against x must give x's shape
        probe = np.empty([max(int(d), 0) for d in shape.reshape(-1)], dtype=np.bool_) if shape.size else np.empty(())
        if not broadcast_keeps_shape(node.inputs[0], probe):
            return "the target shape would broadcast the input"
        return replace_check(node.outputs[0], node.inputs[0], ctx) or {}

    def rewrite(self, node, match, ctx):
        bypass(node, node.inputs[0], ctx)
