"""Gemm -> Mul by a scalar constant: alpha and beta scale. Gemm -> Add of a constant: it joins C
(beta*C + c with beta reset to 1). Both keep Y = alpha*A'B' + beta*C up to float rounding."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..engine import Rule
from ..util import NoMatch, const, dtype, only_consumer, produced_by, static_dims, take_output
from ._conv import const_operand


def gemm_and_constant(node, ctx):
    """(gemm, its output, the constant) when `node` combines a Gemm's sole output with a constant; else NoMatch."""
    x, c = const_operand(node, commutative=True)
    if x is None:
        raise NoMatch("no constant operand")
    gemm = produced_by(x, "Gemm")
    if not only_consumer(x, ctx):
        raise NoMatch("the Gemm output has other consumers")
    return gemm, x, c


class GemmMul(Rule, name="gemm_mul", anchors=("Mul",)):
    def check(self, node, ctx):
        gemm, x, c = gemm_and_constant(node, ctx)
        if c.size != 1 or c.ndim > 2 or c.dtype != dtype(x) or c.dtype.kind != "f":
            return "the factor is not a scalar of the Gemm's float type"
        s = float(c.reshape(-1)[0])
        if not np.isfinite(s):
            return "the factor is not finite"
        return {"gemm": gemm, "s": s}

    def rewrite(self, node, match, ctx):
        gemm, s = match["gemm"], match["s"]
        gemm.attrs["alpha"] = float(gemm.attrs.get("alpha", 1.0)) * s
        gemm.attrs["beta"] = float(gemm.attrs.get("beta", 1.0)) * s
        take_output(gemm, node)


class GemmAdd(Rule, name="gemm_add", anchors=("Add",)):
    def check(self, node, ctx):
        gemm, x, c = gemm_and_constant(node, ctx)
        old = const(gemm.inputs[2]) if len(gemm.inputs) > 2 and gemm.inputs[2].name else None
        if len(gemm.inputs) > 2 and gemm.inputs[2].name and old is None:
            return "the Gemm's C is not constant"
        out = static_dims(x)
        if out is None or len(out) != 2 or c.ndim > 2 or c.dtype != dtype(x) or c.dtype.kind != "f":
            return "unknown output shape or addend dtype/rank"
        if not all(cd == 1 or cd == od for cd, od in zip(c.shape[::-1], out[::-1])):
            return f"the addend of shape {c.shape} would broadcast the output"
        beta = float(gemm.attrs.get("beta", 1.0))
        total = c.astype(np.float64) if old is None else beta * old.astype(np.float64) + c.astype(np.float64)
        return {"gemm": gemm, "c": total.astype(c.dtype)}

    def rewrite(self, node, match, ctx):
        gemm = match["gemm"]
        cst = gs.Constant(ctx.fresh(f"{gemm.name or 'gemm'}_C_add"), match["c"])
        if len(gemm.inputs) > 2:
            gemm.inputs[2] = cst
        else:
            gemm.inputs.append(cst)
        gemm.attrs["beta"] = 1.0
        take_output(gemm, node)
