"""An Expand whose target shape leaves the input's shape unchanged is removed."""
from __future__ import annotations

import numpy as np

from ..engine import RemoveNode
from ..util import broadcast_keeps_shape, const


class ExpandNoop(RemoveNode, name="expand_noop", anchors=("Expand",)):
    def why_not(self, node, ctx):
        shape = const(node.inputs[1])
        if shape is None:
            return "the target shape is computed at run time"
        # broadcasting a tensor of the target shape against x must give x's shape
        probe = np.empty([max(int(d), 0) for d in shape.reshape(-1)], dtype=np.bool_) if shape.size else np.empty(())
        return None if broadcast_keeps_shape(node.inputs[0], probe) else "the target shape would broadcast the input"
