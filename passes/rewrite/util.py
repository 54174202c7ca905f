"""Helpers shared by the rewrite rules: constant values, axes read from an attribute or an input (which one
depends on the opset), static shapes, and rewiring a tensor's consumers safely around graph outputs."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxslim.ondisk import DiskValues, values_of


class NoMatch(Exception):
    """Raised by a check, or a helper it calls, with the reason the rule does not apply (onnxscript's
    `MatchResult.fail`): a helper that finds no match then needs no `if isinstance(x, str)` in every caller."""


def const(t) -> np.ndarray | None:
    """The value of a constant tensor, else None."""
    if isinstance(t, gs.Constant):
        v = values_of(t)  # a weight on disk is read, not kept: unchanged, it stays a reference on disk
        return v.load() if hasattr(v, "load") else np.asarray(v)  # LazyValues: initializers read on demand
    return None


def producer(t, op: str | tuple[str, ...] | None = None) -> gs.Node | None:
    if not isinstance(t, gs.Variable) or len(t.inputs) != 1:
        return None
    node = t.inputs[0]
    ops = (op,) if isinstance(op, str) else op
    return node if ops is None or node.op in ops else None


def produced_by(t, op: str) -> gs.Node:
    """The `op` node writing t, else NoMatch: the first step of every chain rule (X -> X merged into one)."""
    node = producer(t, op)
    if node is None:
        raise NoMatch(f"input is not produced by {'an' if op[0] in 'AEIOU' else 'a'} {op}")
    return node


def only_consumer(t, ctx) -> bool:
    """t feeds one node and is not a graph output: fusing its producer into that node loses nothing."""
    return isinstance(t, gs.Variable) and len(t.outputs) == 1 and id(t) not in ctx.output_ids()


def rank(t) -> int | None:
    dims = static_dims(t)
    return None if dims is None else len(dims)


def static_dims(t) -> list | None:
    """Shape with ints for known dims and None for symbolic or unknown ones; None when the rank is unknown."""
    if isinstance(t, gs.Constant):  # a weight left on disk: its dims from the proto, not its loaded values
        return [int(d) for d in t._values.tensor.dims] if isinstance(t._values, DiskValues) else list(t.values.shape)
    shape = getattr(t, "shape", None)
    if shape is None:
        return None
    return [d if isinstance(d, (int, np.integer)) and d >= 0 else None for d in shape]


def dtype(t):
    """numpy dtype, or None when unknown or numpy has none (bfloat16 and float8 arrive as onnx type ints)."""
    if isinstance(t, gs.Constant):
        if isinstance(t._values, DiskValues):  # from the proto: reading `values` would load the weight
            return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t._values.tensor.data_type))
        return t.values.dtype
    try:
        return np.dtype(t.dtype) if getattr(t, "dtype", None) is not None else None
    except TypeError:
        return None


def axes_of(node: gs.Node, input_index: int, ctx) -> list[int] | None | str:
    """Axes from the attribute (older opsets) or the constant input at input_index (newer ones).
    Returns None when the node gives no axes at all, or a reason string when they are not constant."""
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]]
    if len(node.inputs) > input_index and node.inputs[input_index].name:
        value = const(node.inputs[input_index])
        if value is None:
            return "axes are computed at run time"
        return [int(a) for a in value.reshape(-1)]
    return None


def normalize_axes(axes: list[int], r: int | None) -> list[int] | None:
    if any(a < 0 for a in axes):
        if r is None:
            return None
        axes = [a + r if a < 0 else a for a in axes]
    return sorted(axes)


def broadcast_keeps_shape(x, c: np.ndarray) -> bool:
    """x op c has exactly x's shape for any value of x's dynamic dims: c has no more dims than x, and each of
    c's dims (aligned right) is 1 or equal to x's known dim there."""
    dims = static_dims(x)
    if dims is None or c.ndim > len(dims):
        return False
    return all(cd == 1 or xd == cd for cd, xd in zip(c.shape[::-1], dims[::-1]))


def replace_check(old: gs.Variable, new, ctx) -> str | None:
    """Reason why `old`'s uses cannot all be redirected to `new`, else None."""
    if id(old) not in ctx.output_ids():
        return None
    if isinstance(new, gs.Constant) or id(new) in ctx.output_ids() or new in ctx.graph.inputs:
        return "its output is a graph output and the replacement is not a node output of its own"
    if len(new.inputs) != 1:
        return "its output is a graph output and the replacement has no producer"
    return None


def swap(seq, old, new) -> None:
    """Replace `old` by `new` in a node's inputs or outputs, one index at a time (graphsurgeon keeps the
    tensor's side of the link in sync per item, not for slices)."""
    for i, t in enumerate(list(seq)):
        if t is old:
            seq[i] = new


def replace_tensor(old: gs.Variable, new, ctx) -> None:
    """Every consumer of `old` reads `new` instead. When `old` is a graph output, `new`'s producer writes
    `old` directly (its name is the model's interface) and `new`'s consumers follow (replace_check first)."""
    if id(old) in ctx.output_ids():
        for consumer in list(new.outputs):
            swap(consumer.inputs, new, old)
        swap(new.inputs[0].outputs, new, old)
        return
    for consumer in list(old.outputs):
        swap(consumer.inputs, old, new)


def take_output(producer_node: gs.Node, node: gs.Node) -> None:
    """`producer_node` (fused with `node`) now writes what `node` wrote; `node` is detached."""
    y = node.outputs[0]
    node.outputs.clear()
    node.inputs.clear()
    producer_node.outputs[0] = y


def bypass(node: gs.Node, src, ctx) -> None:
    """Remove a node whose first output equals `src`."""
    out = node.outputs[0]
    node.outputs.clear()
    replace_tensor(out, src, ctx)
    node.inputs.clear()
