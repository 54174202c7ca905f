"""A Slice that keeps every element (start 0, step 1, end at or past the dim) is removed."""
from __future__ import annotations

from ..engine import RemoveNode
from ..util import NoMatch, const, static_dims

BIG = 2**31 - 1  # exporters write INT_MAX or INT64_MAX for "to the end"


def slice_params(node) -> tuple:
    """(starts, ends, axes, steps) as int lists, axes and steps None when not given; NoMatch when any is
    computed at run time."""
    if "starts" in node.attrs:  # opset < 10
        return list(node.attrs["starts"]), list(node.attrs["ends"]), node.attrs.get("axes"), None
    vals = []
    for i in range(1, 5):
        if len(node.inputs) > i and node.inputs[i].name:
            v = const(node.inputs[i])
            if v is None:
                raise NoMatch("slice parameters are computed at run time")
            vals.append([int(x) for x in v.reshape(-1)])
        else:
            vals.append(None)
    return tuple(vals)


class SliceNoop(RemoveNode, name="slice_noop", anchors=("Slice",)):
    def why_not(self, node, ctx):
        starts, ends, axes, steps = slice_params(node)
        dims = static_dims(node.inputs[0])
        if axes is None:
            axes = list(range(len(starts)))
        steps = steps or [1] * len(starts)
        for s, e, a, st in zip(starts, ends, axes, steps):
            if st != 1:
                return "a step is not 1"
            known = dims[a] if dims is not None and -len(dims) <= a < len(dims) else None
            if not (s == 0 or (known is not None and s <= -known)):
                return "a start is not at the beginning"
            if not (e >= BIG or (known is not None and e >= known)):
                return "an end is not at or past the end"
        return None
