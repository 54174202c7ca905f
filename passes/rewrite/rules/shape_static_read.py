"""Shape(x) and its Gather/Slice reads become constants where every dim they read is static, though other
dims of x (a batch, a detection count) are not.

The folder does this before the rules (cleanup/shape_reads.py), but with the shapes it knew then; shapes
inferred later (value propagation through Shape -> ConstantOfShape, ops the folder's per-node inference
left unknown) make more reads static: RoiAlign's [num_rois, 256, 7, 7] read at dim 1 is 256. Exact: a
static dim is the same for every input the model accepts."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.passes.cleanup.shape_reads import read_static

from ..engine import Rule
from ..util import const, static_dims


def _dims(node) -> list | None:
    dims = static_dims(node.inputs[0])
    if dims is None:
        return None
    start, end = int(node.attrs.get("start", 0)), node.attrs.get("end")
    return dims[start:None if end is None else int(end)]  # Python slicing clamps like the spec


class ShapeStaticRead(Rule, name="shape_static_read", anchors=("Shape",)):
    def check(self, node, ctx):
        dims = _dims(node)
        if dims is None:
            return "the input's rank is unknown"
        out = node.outputs[0]
        if id(out) in ctx.output_ids():
            return "the shape is a graph output"
        if all(d is not None for d in dims):
            return {"reads": [(out, np.array(dims, dtype=np.int64))]}
        reads = []
        for user in out.outputs:
            if user.inputs[0] is not out or id(user.outputs[0]) in ctx.output_ids() or user.domain not in ("", None, "ai.onnx"):
                continue
            consts = [(... if not t.name else const(t)) for t in user.inputs[1:]]
            values = read_static(user.op, int(user.attrs.get("axis", 0)), consts, dims)
            if values is not None:
                reads.append((user.outputs[0], values))
        return {"reads": reads} if reads else "no read of static dims only"

    def rewrite(self, node, match, ctx):
        for tensor, values in match["reads"]:
            value = gs.Constant(ctx.fresh(f"{tensor.name}_static"), values)
            for consumer in list(tensor.outputs):
                for i, t in enumerate(list(consumer.inputs)):
                    if t is tensor:
                        consumer.inputs[i] = value
