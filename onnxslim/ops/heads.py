"""Attention heads as channel classes (issue 13).

Exporters write multi-head attention as plain ops: Q, K and V projections whose output features
`h*D .. (h+1)*D` belong to head h, a Reshape `(B, S, H*D) -> (B, S, H, D)`, Transposes that bring H next
to the batch, the score MatMul `Q @ K^T` and the context MatMul `P @ V` (products of two activations, with
H a batch axis of both), a Transpose back and a merge Reshape to `H*D` into the output projection.

Removing head h is exact (the pruning oracle holds): every tensor between the projections and the output
projection is a stack of independent per-head slices, so dropping slice h everywhere equals zeroing the
output projection's input features of head h. In channel terms:

- `activation_matmul`: a MatMul of two activations ties its batch axes (numpy broadcast), the row axis of
  the left operand to the output's rows and the column axis of the right operand to the output's columns;
  the contracted axis is frozen (removing an index there changes every output).
- `split_carrier` / `merge_carrier`: which axis of a Reshape's split/merge block carries the channel
  identity. The generic rule takes the largest axis (channel shuffles); for a head split that feeds the
  score or context MatMul (or a merge fed by the context MatMul) it is the head axis, so the D positions of
  one head form one class, and the Reshape constants are rewritten for the new head count.

A group holding such a MatMul's batch axis is a *head group*: `head_layout` names its heads and head dim.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .helpers import EXIT, Builder, Frozen

# ops that keep every axis in place and may sit between the head Reshape and the MatMuls
# (a scale by a scalar, a cast, a rotary-free bias)
_PASS_THROUGH = {"Mul", "Div", "Cast", "Identity", "Add", "Sub"}
_MAX_HOPS = 6  # Reshape -> Transpose -> Mul -> MatMul is 3 hops; deeper chains are not the head form


def _activation_matmul_node(node: gs.Node) -> bool:
    return node.op == "MatMul" and len(node.inputs) == 2 and not any(isinstance(t, gs.Constant) for t in node.inputs)


# -- MatMul of two activations --------------------------------------------------------------------------
def activation_matmul(b: Builder, node: gs.Node, tensor, axis: int) -> None:
    """y = a @ c with both operands activations (score and context MatMuls of attention)."""
    a, c, y = node.inputs[0], node.inputs[1], node.outputs[0]
    ra, rc, ry = len(a.shape or ()), len(c.shape or ()), len(y.shape or ())
    if min(ra, rc) < 2:
        raise Frozen("MatMul of a vector")
    if tensor is not None and tensor.name == a.name and tensor.name == c.name:
        raise Frozen("MatMul of a tensor with itself")
    if tensor.name == a.name:
        if axis == ra - 1:
            raise Frozen("contracted by a product of two activations")
        y_axis = ry - 2 if axis == ra - 2 else axis + ry - ra
    elif tensor.name == c.name:
        if axis == rc - 2:
            raise Frozen("contracted by a product of two activations")
        y_axis = ry - 1 if axis == rc - 1 else axis + ry - rc
    else:
        y_axis = axis
    ys = b.act(y, y_axis)
    if y_axis == ry - 2:
        b.link(ys, b.act(a, ra - 2))
        return
    if y_axis == ry - 1:
        b.link(ys, b.act(c, rc - 1))
        return
    for operand, rank in ((a, ra), (c, rc)):  # a batch axis: every operand that has it (not broadcast)
        ax = y_axis - (ry - rank)
        if ax < 0:
            continue
        dim = operand.shape[ax]
        if isinstance(dim, (int, np.integer)) and dim == 1 and ys.size != 1:
            continue
        b.link(ys, b.act(operand, ax))


# -- which axis of a Reshape block carries the channels --------------------------------------------------
def split_carrier(b: Builder, node: gs.Node, outs: list[int]) -> int | None:
    """For a Reshape splitting one axis into `outs` (output axes), the head axis when the split is an
    attention head split: the innermost axis (D) reaches an activation MatMul as its contracted axis or as
    the column axis of the right operand (V), with the axis before it (H) a batch axis there."""
    heads = len(outs) >= 2 and _reaches_head_matmul(b, node.outputs[0], {outs[-2]: "H", outs[-1]: "D"}, 0)
    return outs[-2] if heads else None


def merge_carrier(b: Builder, node: gs.Node, ins: list[int]) -> int | None:
    """For a Reshape merging input axes `ins` into one, the head axis when the input comes (through
    Transposes) from a context MatMul whose batch axis is H and whose column axis is D."""
    if len(ins) < 2:
        return None
    head, dim = ins[-2], ins[-1]
    tensor, axes = node.inputs[0], {head: "H", dim: "D"}
    for _ in range(_MAX_HOPS):
        producer = b.producer.get(tensor.name)
        if producer is None:
            return None
        if producer.op == "Transpose":
            perm = _perm(producer, tensor)
            axes = {perm[ax]: role for ax, role in axes.items()}
            tensor = producer.inputs[0]
            continue
        if producer.op == "Attention":  # the 4-D form's Y: [B, H, S, Dv]
            return head if axes.get(1) == "H" and axes.get(3) == "D" else None
        if _activation_matmul_node(producer):
            rank = len(tensor.shape or ())
            roles = {role: ax for ax, role in axes.items()}
            return head if roles["D"] == rank - 1 and roles["H"] < rank - 2 else None
        return None
    return None


def _perm(node: gs.Node, tensor) -> list[int]:
    rank = len(tensor.shape or node.inputs[0].shape or ())
    return [int(p) for p in node.attrs.get("perm", list(range(rank))[::-1])]


def _reaches_head_matmul(b: Builder, tensor, axes: dict, depth: int) -> bool:
    """Follow `tensor` (with `axes`: axis -> "H"/"D") forward; True when every path that is not a shape
    read ends in an activation MatMul that uses H as a batch axis and D as contracted or V's columns."""
    if depth > _MAX_HOPS:
        return False
    users = [n for n in b.consumers.get(tensor.name, []) if n.op != "Shape"]
    if not users:
        return False
    for user in users:
        if user.op == "Transpose":
            perm = _perm(user, tensor)
            moved = {perm.index(ax): role for ax, role in axes.items()}
            if not _reaches_head_matmul(b, user.outputs[0], moved, depth + 1):
                return False
        elif user.op in ("Gather", "Reshape"):  # packed QKV picked apart; a size-1 axis put in or taken out
            moved = _gather_axes(user, tensor, axes) if user.op == "Gather" else _reshape_axes(user, axes)
            if moved is None or not _reaches_head_matmul(b, user.outputs[0], moved, depth + 1):
                return False
        elif user.op in _PASS_THROUGH and len(user.outputs) == 1 and _same_rank(tensor, user.outputs[0]):
            if not _reaches_head_matmul(b, user.outputs[0], axes, depth + 1):
                return False
        elif _activation_matmul_node(user):
            if not _head_use(user, tensor, axes):
                return False
        elif user.op == "Attention":  # the 4-D form: [B, H, S, D] (attention_op.py)
            if axes.get(1) != "H" or axes.get(3) != "D":
                return False
        else:
            return False
    return True


def _gather_axes(node: gs.Node, tensor, axes: dict) -> dict | None:
    """Axes after a Gather of one constant index on another axis (the axis drops out)."""
    index = node.inputs[1]
    if node.inputs[0] is not tensor or not isinstance(index, gs.Constant) or np.asarray(index.values).ndim != 0:
        return None
    rank = len(tensor.shape or ())
    gathered = int(node.attrs.get("axis", 0)) % max(rank, 1)
    if gathered in axes:
        return None
    return {ax - (ax > gathered): role for ax, role in axes.items()}


def _reshape_axes(node: gs.Node, axes: dict) -> dict | None:
    """Axes after a Reshape that keeps H and D as axes of their own (one-to-one blocks)."""
    from .layout import reshape_blocks  # layout imports this module

    x, y = node.inputs[0], node.outputs[0]
    if x.shape is None or y.shape is None:
        return None
    blocks = reshape_blocks(tuple(x.shape), tuple(y.shape)) or []
    moved = {outs[0]: axes[ins[0]] for ins, outs in blocks if len(ins) == 1 and len(outs) == 1 and ins[0] in axes}
    return moved if len(moved) == len(axes) else None


def gather(b: Builder, node: gs.Node, tensor, axis: int) -> None:
    """Gather of an activation with constant indices (packed QKV split by index): the other axes pass
    through (a scalar index drops its axis); the gathered axis itself is frozen."""
    data, index, y = node.inputs[0], node.inputs[1], node.outputs[0]
    if isinstance(data, gs.Constant) or not isinstance(index, gs.Constant):
        raise Frozen("Gather from a constant table or by run-time indices")
    rank = len(data.shape or ())
    gathered = int(node.attrs.get("axis", 0)) % max(rank, 1)
    drop = np.asarray(index.values).ndim == 0
    if np.asarray(index.values).ndim > 1:
        raise Frozen("Gather with multi-dimensional indices")
    if tensor.name == data.name:
        if axis == gathered:
            raise Frozen("gathered axis")
        b.link(b.act(data, axis), b.act(y, axis - (drop and axis > gathered)))
        return
    if not drop and axis == gathered:
        raise Frozen("gathered axis")
    b.link(b.act(data, axis + (drop and axis >= gathered)), b.act(y, axis))


def _head_use(matmul: gs.Node, tensor, axes: dict) -> bool:
    rank = len(tensor.shape or ())
    roles = {role: ax for ax, role in axes.items()}
    if roles["H"] >= rank - 2:
        return False
    if matmul.inputs[0].name == tensor.name:  # Q (or the probabilities): D contracted
        return roles["D"] == rank - 1
    return roles["D"] in (rank - 2, rank - 1)  # K^T (contracted) or V (columns)


# -- describing head groups --------------------------------------------------------------------------------
def head_layout(analysis, group) -> tuple[int, int] | None:
    """(heads, head dim) when `group` holds the head axis of an activation MatMul, else None."""
    if getattr(analysis, "_head_producers", None) is None:
        analysis._head_producers = {t.name for n in analysis.graph.nodes if _activation_matmul_node(n) for t in n.outputs}
        analysis._attention_outputs = {n.outputs[0].name for n in analysis.graph.nodes if n.op == "Attention"}
    for space in group.spaces:
        if not space.is_constant and space.tensor in analysis._attention_outputs:  # units: heads or KV groups
            return group.n_classes, _unit_width(group)
        if not space.is_constant and space.tensor in analysis._head_producers:
            shape = next((n.outputs[0].shape for n in analysis.graph.nodes
                          if n.outputs and n.outputs[0].name == space.tensor), None)
            if shape is not None and space.axis < len(shape) - 2 and space.size == group.n_classes:
                return group.n_classes, _unit_width(group)
    return None


def _unit_width(group) -> int:
    """Input features of the output projection per unit (a packed QKV projection is 3x wider)."""
    exits = [s.size for s in group.spaces if s.role == EXIT]
    return (min(exits) if exits else group.channels) // max(group.n_classes, 1)


def _same_rank(a, c) -> bool:
    return a.shape is not None and c.shape is not None and len(a.shape) == len(c.shape)
