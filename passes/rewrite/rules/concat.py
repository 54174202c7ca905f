"""A Concat of one input is removed; a Concat feeding only another Concat on the same axis is inlined into
it (one node instead of two)."""
from __future__ import annotations

from ..engine import RemoveNode, Rule
from ..util import only_consumer, producer, rank


def _axis(node, r):
    a = int(node.attrs.get("axis", 0))
    return a + r if a < 0 and r is not None else a


class ConcatSingle(RemoveNode, name="concat_single", anchors=("Concat",)):
    def why_not(self, node, ctx):
        return "more than one input" if len(node.inputs) != 1 else None


class ConcatFlatten(Rule, name="concat_flatten", anchors=("Concat",)):
    def check(self, node, ctx):
        r = rank(node.outputs[0])
        for i, t in enumerate(node.inputs):
            inner = producer(t, "Concat")
            if inner is None or not only_consumer(t, ctx) or node.inputs.count(t) != 1:
                continue
            a, b = _axis(inner, r), _axis(node, r)
            if a == b and (a >= 0 or int(inner.attrs.get("axis", 0)) == int(node.attrs.get("axis", 0))):
                return {"index": i, "inner": inner}
        return "no single-use Concat input on the same axis"

    def rewrite(self, node, match, ctx):
        inner, i = match["inner"], match["index"]
        parts = list(inner.inputs)
        new = list(node.inputs[:i]) + parts + list(node.inputs[i + 1:])
        inner.outputs.clear()
        inner.inputs.clear()
        node.inputs.clear()
        node.inputs.extend(new)
