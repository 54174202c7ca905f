"""Common-subexpression elimination: two nodes with the same op, domain, attributes and inputs compute the
same outputs; the later one's consumers read the earlier one's. Not for ops that draw random numbers, nor
for nodes holding subgraphs (their bodies would need comparing), nor for custom-domain ops."""
from __future__ import annotations

import hashlib

import numpy as np
import onnx_graphsurgeon as gs

from ..engine import Rule
from ..util import const
from ..util import replace_check, replace_tensor

RANDOM = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
SMALL = 4096  # constants up to this many bytes compare by value; larger ones by identity (tied first)


def _value_key(v):
    if isinstance(v, gs.Constant):
        a = const(v)
        return ("T", str(a.dtype), a.shape, hashlib.sha1(a.tobytes()).hexdigest())
    if isinstance(v, (list, tuple)):
        return tuple(_value_key(x) for x in v)
    if isinstance(v, np.ndarray):
        return ("A", str(v.dtype), v.shape, v.tobytes())
    if isinstance(v, float) and v != v:
        return ("nan",)
    return v


def _input_key(t):
    if not t.name:
        return ""  # an omitted optional input
    if isinstance(t, gs.Constant) and int(np.prod(t.shape)) * np.dtype(t.dtype).itemsize <= SMALL:
        return _value_key(t)
    return id(t)


def node_key(node: gs.Node):
    """A hashable key, or None when the node must not be merged."""
    if node.op in RANDOM or any(isinstance(v, gs.Graph) for v in node.attrs.values()):
        return None
    if node.domain not in ("", None, "ai.onnx"):
        return None  # a custom op may draw random numbers or keep state: nothing says it is a pure function
    try:
        attrs = tuple(sorted((k, _value_key(v)) for k, v in node.attrs.items()))
        key = (node.op, node.domain or "", attrs, tuple(_input_key(t) for t in node.inputs), len(node.outputs))
        hash(key)
    except TypeError:  # an attribute type we do not know how to compare: leave the node alone
        return None
    return key


class CommonSubexpression(Rule, name="cse"):
    def apply(self, ctx) -> int:
        ctx.graph.toposort()  # the kept copy is the earlier one: every consumer of the later sees it computed
        seen: dict = {}
        merged = 0
        for node in list(ctx.graph.nodes):
            if not node.outputs:
                continue
            key = node_key(node)
            if key is None:
                continue
            first = seen.get(key)
            if first is None:
                seen[key] = node
                continue
            reasons = [replace_check(o, f, ctx) for o, f in zip(node.outputs, first.outputs)]
            if any(reasons) or any(o.dtype != f.dtype for o, f in zip(node.outputs, first.outputs) if o.dtype and f.dtype):
                ctx.refuse(self.name, node, next((r for r in reasons if r), "output types differ"))
                continue
            outs = list(node.outputs)
            node.outputs.clear()
            node.inputs.clear()
            for o, f in zip(outs, first.outputs):
                if o.name:
                    replace_tensor(o, f, ctx)
            merged += 1
        return merged
