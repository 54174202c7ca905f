"""A Reshape target entry that is provably the input's own dim at the same position becomes 0 ("copy that
dim"): Reshape(x, Concat(Unsqueeze(Gather(Shape(y), 0)), [1], [-1])) where y's dim 0 and x's dim 0 have one
origin (passes/rewrite/dims.py) takes the target [0, 1, -1]; the target is then constant and the
Shape/Gather/Unsqueeze/Concat chain dies.

Why it is exact: with allowzero = 0 a 0 entry means "x's dim at this position", which is the value the
entry held, for every input (a zero-sized dim included: 0 is copied as 0)."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..dims import Dims, dims_read
from ..engine import Rule
from ..util import const, producer


def _pieces(target) -> list:
    concat = producer(target, "Concat")
    if concat is not None and int(concat.attrs.get("axis", 0)) in (0, -1):
        return list(concat.inputs)
    return [target]


class ReshapeCopyDim(Rule, name="reshape_copy_dim", anchors=("Reshape",)):
    def check(self, node, ctx):
        if int(node.attrs.get("allowzero", 0)):
            return "allowzero: a 0 entry means size 0"
        x, target = node.inputs[0], node.inputs[1]
        if const(target) is not None:
            return "the target is constant"
        dims = Dims()
        r = dims.rank(x)
        if r is None:
            return "the input's rank is unknown"
        pieces, values, position, changed = _pieces(target), [], 0, False
        for piece in pieces:
            value, reads = const(piece), None
            if value is None:
                reads = dims_read(piece, dims)
                if reads is None:
                    return "a run-time piece of the target is not read from shapes"
            n = value.size if value is not None else len(reads)
            if reads is not None and all(position + k < r and dims.same(t, a, x, position + k) for k, (t, a) in enumerate(reads)):
                value, changed = np.zeros(n, dtype=np.int64), True
            values.append(value.reshape(-1).astype(np.int64) if value is not None else None)
            position += n
        if not changed:
            return "no run-time entry is provably the input's dim at its position"
        return {"pieces": pieces, "values": values}

    def rewrite(self, node, match, ctx):
        values = match["values"]
        base = node.name or "reshape"
        if all(v is not None for v in values):
            node.inputs[1] = gs.Constant(ctx.fresh(f"{base}_copy_shape"), np.concatenate(values))
            return
        pieces = [p if v is None else gs.Constant(ctx.fresh(f"{base}_copy"), v) for p, v in zip(match["pieces"], values)]
        out = gs.Variable(ctx.fresh(f"{base}_shape"), dtype=np.int64, shape=node.inputs[1].shape)
        ctx.graph.nodes.append(gs.Node("Concat", name=ctx.fresh(f"{base}_concat"), attrs={"axis": 0}, inputs=pieces, outputs=[out]))
        node.inputs[1] = out
