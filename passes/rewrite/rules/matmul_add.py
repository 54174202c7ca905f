"""MatMul(A, B) -> Add(C) with A and B 2-D: one Gemm. Only 2-D: Gemm has no batch dims, and reshaping
around it would add nodes. C must broadcast to [M, N] without changing the output's shape."""
from __future__ import annotations

import onnx_graphsurgeon as gs

from ..engine import Rule
from ..util import dtype, only_consumer, producer, rank, static_dims

GEMM_TYPES = ("float16", "float32", "float64", "bfloat16")


class MatMulAdd(Rule, name="matmul_add_gemm", anchors=("Add",)):
    def check(self, node, ctx):
        for i in (0, 1):
            mm = producer(node.inputs[i], "MatMul")
            if mm is not None:
                y, c = node.inputs[i], node.inputs[1 - i]
                break
        else:
            return "no MatMul operand"
        if not only_consumer(y, ctx):
            return "the MatMul output has other consumers"
        a, b = mm.inputs
        if rank(a) != 2 or rank(b) != 2:
            return "MatMul operands are not both 2-D (Gemm has no batch dims)"
        if dtype(a) is None or str(dtype(a)) not in GEMM_TYPES or dtype(b) != dtype(a) or dtype(c) != dtype(a):
            return "dtypes differ or are not float"
        out = static_dims(y)
        cdims = static_dims(c)
        if cdims is None or out is None or len(cdims) > 2:
            return "the addend's shape is unknown or has more than 2 dims"
        # unidirectional: each addend dim (aligned right) is 1 or the output's known dim
        if not all(cd == 1 or (cd is not None and cd == od) for cd, od in zip(cdims[::-1], out[::-1])):
            return f"the addend of shape {cdims} would broadcast the output"
        return {"mm": mm, "c": c}

    def rewrite(self, node, match, ctx):
        mm = match["mm"]
        a, b = list(mm.inputs)
        y = node.outputs[0]
        node.outputs.clear()
        node.inputs.clear()
        mm.inputs.clear()
        mm.outputs.clear()
        ctx.graph.nodes.append(gs.Node("Gemm", name=mm.name, inputs=[a, b, match["c"]], outputs=[y]))
