"""A Cast to the type its input already has is removed. Cast(Cast(x, T1), T2) is Cast(x, T2) when T1
holds every value of x's type exactly (a widening), so the first Cast rounds nothing."""
from __future__ import annotations

import numpy as np
import onnx

from ..engine import RemoveNode, Rule
from ..util import dtype, produced_by

# type -> the types that represent each of its values exactly
_EXACT = {
    "bool": {"int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float16", "float32", "float64"},
    "int8": {"int16", "int32", "int64", "float16", "float32", "float64"},
    "uint8": {"int16", "uint16", "int32", "uint32", "int64", "uint64", "float16", "float32", "float64"},
    "int16": {"int32", "int64", "float32", "float64"},
    "uint16": {"int32", "uint32", "int64", "uint64", "float32", "float64"},
    "int32": {"int64", "float64"},
    "uint32": {"int64", "uint64", "float64"},
    "float16": {"float32", "float64"},
    "float32": {"float64"},
}


def _target(node) -> str | None:
    to = node.attrs.get("to")
    try:
        return str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(to))))
    except Exception:  # bfloat16, float8, strings: no numpy dtype, leave those Casts alone
        return None


class CastNoop(RemoveNode, name="cast_noop", anchors=("Cast",)):
    def why_not(self, node, ctx):
        src, to = dtype(node.inputs[0]), _target(node)
        if src is None or to is None or str(src) != to:
            return "the Cast changes the type (or the input type is unknown)"
        return None


class CastChain(Rule, name="cast_chain", anchors=("Cast",)):
    def check(self, node, ctx):
        first = produced_by(node.inputs[0], "Cast")
        src, mid = dtype(first.inputs[0]), _target(first)
        if _target(node) in (None, "object"):
            return "the last Cast's target is not numeric (strings print each type differently)"
        if src is None or mid is None or mid not in _EXACT.get(str(src), set()):
            return f"the first Cast ({src} -> {mid}) may round or wrap"
        return {"src": first.inputs[0]}

    def rewrite(self, node, match, ctx):
        node.inputs[0] = match["src"]
