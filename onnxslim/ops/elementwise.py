"""Channel rules of the ops that keep channels where they are: element-wise, normalization, pooling,
Resize, Pad, reductions over other axes."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .helpers import PARAM, Builder, Frozen, int_list, is_int, present, rank_of, replace_input, same_tensor, shape_of
from .shape_values import dim_is_one


def elementwise(operands=None):
    """Same index on the aligned axis of every operand after numpy broadcasting; a constant operand with
    that axis is a member (sliced), a broadcast operand (dim 1) is not."""
    def rule(b: Builder, node, tensor, axis):
        out = node.outputs[0]
        rank_out = rank_of(out)
        o = axis if same_tensor(tensor, out) else axis + rank_out - rank_of(tensor)
        ys = b.act(out, o)
        indices = range(len(node.inputs)) if operands is None else operands
        for i in indices:
            if not present(node, i):
                continue
            t = node.inputs[i]
            ax = o - (rank_out - rank_of(t))
            if ax < 0:
                continue
            d = shape_of(t)[ax]
            if is_int(d) and d == 1 and ys.size != 1:
                continue
            if not is_int(d) and dim_is_one(b, t, ax):  # a mask broadcast over the heads, sized at run time
                continue
            if not is_int(d) or d != ys.size:
                raise Frozen(f"operand '{t.name}' has dim {d} where the channel axis has {ys.size}")
            if isinstance(t, gs.Constant):
                b.link(ys, b.const(node, i, ax, PARAM))
            else:
                b.link(ys, b.act(t, ax))
    return rule


def normalization(param_roles: dict[int, str]):
    """BatchNormalization / InstanceNormalization: per-channel parameters on axis 1 are members."""
    def rule(b: Builder, node, tensor, axis):
        x, y = node.inputs[0], node.outputs[0]
        if axis != 1:
            b.link(b.act(x, axis), b.act(y, axis))
            return
        xs, ys = b.act(x, 1), b.act(y, 1)
        b.link(xs, ys)
        for i, role in param_roles.items():
            if present(node, i):
                b.link(ys, b.const(node, i, 0, role))
    return rule


def layer_norm(b: Builder, node, tensor, axis):
    x, y = node.inputs[0], node.outputs[0]
    start = int(node.attrs.get("axis", -1)) % rank_of(x)
    if axis >= start:
        raise Frozen("LayerNormalization normalizes over this axis")
    b.link(b.act(x, axis), b.act(y, axis))


def softmax(b: Builder, node, tensor, axis):
    x, y = node.inputs[0], node.outputs[0]
    default = -1 if (b.graph.opset or 13) >= 13 else 1
    if axis == int(node.attrs.get("axis", default)) % rank_of(x):
        raise Frozen(f"{node.op} normalizes over this axis")
    b.link(b.act(x, axis), b.act(y, axis))


def channel_preserving(b: Builder, node, tensor, axis):
    """Pooling: spatial axes change size, batch and channel axes pass through."""
    x, y = node.inputs[0], node.outputs[0]
    if axis >= 2:
        raise Frozen("pooling over this axis")
    if len(node.outputs) > 1 and node.outputs[1].outputs:
        raise Frozen("pooling indices are used")
    b.link(b.act(x, axis), b.act(y, axis))


def resize(b: Builder, node, tensor, axis):
    x, y = node.inputs[0], node.outputs[0]
    scale_index, sizes_index = (1, None) if node.op == "Upsample" else (2, 3)
    if "axes" in node.attrs and axis not in [a % rank_of(x) for a in node.attrs["axes"]]:
        b.link(b.act(x, axis), b.act(y, axis))
        return
    if "axes" in node.attrs:
        raise Frozen("Resize with axes over the channel axis")
    scales = _ints_float(node, scale_index)
    if scales is not None and len(scales) and scales[axis] != 1.0:
        raise Frozen("Resize scales the channel axis")
    xs, ys = b.act(x, axis), b.act(y, axis)
    b.link(xs, ys)
    if sizes_index is not None and present(node, sizes_index):
        sizes_t = node.inputs[sizes_index]
        if not isinstance(sizes_t, gs.Constant):
            raise Frozen("Resize sizes computed at run time")
        if len(sizes_t.values):
            def fix(keep, node=node, ys=ys, axis=axis):
                if ys.id in keep:
                    sizes = node.inputs[sizes_index].values.copy()
                    sizes[axis] = len(keep[ys.id])
                    replace_input(node, sizes_index, sizes.astype(np.int64), "sizes")
            b.on_rewrite(node, fix)


def _ints_float(node, index):
    if not present(node, index):
        return None
    t = node.inputs[index]
    if not isinstance(t, gs.Constant):
        raise Frozen("scales computed at run time")
    return [float(v) for v in np.atleast_1d(t.values)]


def pad(b: Builder, node, tensor, axis):
    x, y = node.inputs[0], node.outputs[0]
    rank = rank_of(x)
    pads = int_list(node, "pads", 1)
    axes = int_list(node, "axes", 3, default=list(range(rank)))
    axes = [a % rank for a in axes]
    if pads is None:
        raise Frozen("Pad without pads")
    if axis in axes:
        k = axes.index(axis)
        if pads[k] != 0 or pads[k + len(axes)] != 0:
            raise Frozen("Pad pads the channel axis")
    b.link(b.act(x, axis), b.act(y, axis))
