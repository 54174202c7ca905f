"""Is a run-time-sized dim always 1? A small partial evaluator of shape arithmetic.

Exporters build attention masks with dynamic batch and sequence: torch writes `mask.expand(B, 1, S, S)` as
`Expand(m, Where(Equal(Concat(B, -1, S, S), -1), 1, ...))`, and onnx shape inference (with data
propagation) gives every dim of the result as unknown, though the head axis is 1 by construction. A mask
added to the attention scores must broadcast over the heads for a head to be removable, so the channel
rules ask here. onnx's data propagation stops at Equal/Where; onnxscript's folder needs every value known;
so shape vectors are evaluated here entry by entry (None = unknown), over the few ops exporters use.
"""
from __future__ import annotations

import math

import numpy as np
import onnx_graphsurgeon as gs

from .helpers import is_int

_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Where", "Cast", "Not", "And", "Or", "Equal", "Less", "Greater",
                "LessOrEqual", "GreaterOrEqual", "Neg", "Identity", "Sqrt", "Pow", "Max", "Min"}
_DEPTH = 16


def dim_is_one(b, tensor, axis: int) -> bool:
    """True when dim `axis` of `tensor` is provably 1 whatever the input sizes (b: the channel Builder,
    for its producer map)."""
    try:
        return _is_one(b.producer, tensor, axis, 0)
    except (ValueError, IndexError, TypeError, KeyError):
        return False


def _is_one(producer, tensor, axis: int, depth: int) -> bool:
    shape = tensor.shape
    if shape is None or depth > _DEPTH:
        return False
    rank = len(shape)
    axis %= rank
    if is_int(shape[axis]):
        return shape[axis] == 1
    node = producer.get(tensor.name)
    if node is None:
        return False
    if node.op in _ELEMENTWISE:
        return all(_operand_one(producer, t, rank, axis, depth) for t in node.inputs if t.name)
    if node.op == "Expand":
        target = values(producer, node.inputs[1], depth + 1)
        if target is None:
            return False
        t_axis = axis - (rank - len(target))
        if t_axis < 0 or target[t_axis] != 1:
            return False
        return _operand_one(producer, node.inputs[0], rank, axis, depth)
    if node.op == "Transpose":
        perm = [int(p) for p in node.attrs.get("perm", list(range(rank))[::-1])]
        return _is_one(producer, node.inputs[0], perm[axis], depth + 1)
    if node.op == "Unsqueeze":
        axes = _axes(node, rank)
        if axes is None:
            return False
        if axis in axes:
            return True
        kept = [i for i in range(rank) if i not in axes]
        return _is_one(producer, node.inputs[0], kept.index(axis), depth + 1)
    return False


def _operand_one(producer, t, out_rank: int, axis: int, depth: int) -> bool:
    """An operand of a broadcasting op: missing the axis (shorter rank) or 1 there."""
    if t.shape is None:
        return isinstance(t, gs.Constant) and np.asarray(t.values).ndim + axis < out_rank
    ax = axis - (out_rank - len(t.shape))
    return ax < 0 or _is_one(producer, t, ax, depth + 1)


def _axes(node, rank):
    if "axes" in node.attrs:
        return {int(a) % rank for a in node.attrs["axes"]}
    if len(node.inputs) > 1 and isinstance(node.inputs[1], gs.Constant):
        return {int(a) % rank for a in np.atleast_1d(node.inputs[1].values)}
    return None


def values(producer, tensor, depth: int = 0) -> list | None:
    """The entries of a small int tensor (a shape vector or a scalar), None where unknown; None if even
    its length is unknown."""
    if isinstance(tensor, gs.Constant):
        if math.prod(tensor.shape) > 64:  # from the dims: `values` would read (and keep) a weight on disk
            return None
        v = np.asarray(tensor.values)
        return [int(x) for x in v.reshape(-1)] if v.size <= 64 and v.dtype.kind in "iub" else None
    node = producer.get(tensor.name)
    if node is None or depth > _DEPTH:
        return None
    ins = [values(producer, t, depth + 1) if t.name else None for t in node.inputs]
    op = node.op
    if op == "Shape":
        dims = node.inputs[0].shape
        if dims is None:
            return None
        dims = [int(d) if is_int(d) else None for d in dims]
        start, end = int(node.attrs.get("start", 0)), node.attrs.get("end")
        return dims[start:None if end is None else int(end)]
    if op in ("Identity", "Cast", "Squeeze", "Unsqueeze", "Reshape", "Flatten"):
        return ins[0]  # shape vectors are 1-D or scalars: these only relabel them
    if op == "Concat":
        return None if any(v is None for v in ins) else [x for v in ins for x in v]
    if op == "Gather" and ins[0] is not None and ins[1] is not None and None not in ins[1]:
        return [ins[0][i] for i in ins[1]]
    if op == "ConstantOfShape" and ins[0] is not None and None not in ins[0]:
        fill = node.attrs.get("value")
        fill = int(np.asarray(fill.values).reshape(-1)[0]) if fill is not None else 0
        return [fill] * int(np.prod(ins[0])) if np.prod(ins[0]) <= 64 else None
    if op == "Equal" and ins[0] is not None and ins[1] is not None:
        return [None if x is None or y is None else int(x == y) for x, y in _broadcast(ins[0], ins[1])]
    if op == "Where" and all(v is not None for v in ins):
        n = max(len(v) for v in ins)
        c, a, e = (v * n if len(v) == 1 else v for v in ins)
        return [None if ci is None else (ai if ci else ei) for ci, ai, ei in zip(c, a, e)]
    return None


def _broadcast(x: list, y: list):
    if len(x) == 1:
        x = x * len(y)
    if len(y) == 1:
        y = y * len(x)
    if len(x) != len(y):
        raise ValueError("lengths do not broadcast")
    return zip(x, y)
