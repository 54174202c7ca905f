"""Channel rules of the ops that move channels: Concat, Split, Slice (offsets), Reshape/Flatten (blocks),
Transpose, Squeeze, Unsqueeze."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from . import heads
from .helpers import PARAM, Builder, Frozen, int_list, is_int, rank_of, replace_input, same_tensor, shape_of


def concat(b: Builder, node, tensor, axis):
    y = node.outputs[0]
    rank = rank_of(y)
    cat = int(node.attrs["axis"]) % rank
    operands = [(i, t) for i, t in enumerate(node.inputs)]

    def space(i, t, ax):
        return b.const(node, i, ax, PARAM) if isinstance(t, gs.Constant) else b.act(t, ax)

    if axis != cat:
        ys = b.act(y, axis)
        for i, t in operands:
            b.link(ys, space(i, t, axis))
        return
    ys = b.act(y, cat)
    offset = 0
    for i, t in operands:
        d = shape_of(t)[cat]
        if not is_int(d):
            raise Frozen(f"Concat input '{t.name}' has unknown size")
        if d:
            b.link(space(i, t, cat), ys, np.arange(d), offset + np.arange(d))
        offset += d


def split(b: Builder, node, tensor, axis):
    x = node.inputs[0]
    rank = rank_of(x)
    ax = int(node.attrs.get("axis", 0)) % rank
    outs = list(node.outputs)
    if axis != ax:
        xs = b.act(x, axis)
        for o in outs:
            b.link(xs, b.act(o, axis))
        return
    xs = b.act(x, ax)
    spaces, offset = [], 0
    for o in outs:
        os_ = b.act(o, ax)
        b.link(xs, os_, offset + np.arange(os_.size), np.arange(os_.size))
        offset += os_.size
        spaces.append(os_)
    if offset != xs.size:
        raise Frozen("Split sizes do not cover the axis")

    def fix(keep, node=node, spaces=spaces):
        if not any(s.id in keep for s in spaces):
            return
        sizes = np.array([len(keep[s.id]) if s.id in keep else s.size for s in spaces], dtype=np.int64)
        node.attrs.pop("num_outputs", None)
        if (b.graph.opset or 13) >= 13:
            node.attrs.pop("split", None)
            replace_input(node, 1, sizes, "split")
        else:
            node.attrs["split"] = [int(v) for v in sizes]
    b.on_rewrite(node, fix)


def slice_(b: Builder, node, tensor, axis):
    x, y = node.inputs[0], node.outputs[0]
    rank = rank_of(x)
    starts, ends = int_list(node, "starts", 1), int_list(node, "ends", 2)
    axes = int_list(node, "axes", 3, default=list(range(len(starts or []))))
    steps = int_list(node, "steps", 4, default=[1] * len(axes))
    if starts is None or ends is None:
        raise Frozen("Slice without starts/ends")
    axes = [a % rank for a in axes]
    if axis not in axes:
        b.link(b.act(x, axis), b.act(y, axis))
        return
    k = axes.index(axis)
    if steps[k] != 1:
        raise Frozen("strided Slice on the channel axis")
    xs = b.act(x, axis)
    start, end, _ = slice(starts[k], ends[k]).indices(xs.size)
    ids = np.arange(start, max(start, end))
    ys = b.act(y, axis)
    if len(ids) != ys.size:
        raise Frozen("Slice output size does not match its bounds")
    if len(ids):
        b.link(xs, ys, ids, np.arange(len(ids)))
    if "starts" in node.attrs:
        raise Frozen("Slice-1 with attributes on the channel axis")

    def fix(keep, node=node, xs=xs, k=k, start=start, end=end):
        if xs.id not in keep:
            return
        for name, index, bound in (("starts", 1, start), ("ends", 2, end)):
            values = np.array(int_list(node, name, index), dtype=np.int64)
            values[k] = np.searchsorted(keep[xs.id], bound)
            replace_input(node, index, values, name)
    b.on_rewrite(node, fix)


def reshape_blocks(in_shape, out_shape):
    """Pair input and output axes into blocks of equal size, left to right: ([input axes], [output axes]).
    Unknown dims pair only with unknown dims (the batch); None if the shapes cannot be aligned."""
    blocks, i, j = [], 0, 0
    while i < len(in_shape) or j < len(out_shape):
        if i < len(in_shape) and in_shape[i] == 1 and (j >= len(out_shape) or out_shape[j] != 1):
            blocks.append(([i], []))
            i += 1
            continue
        if j < len(out_shape) and out_shape[j] == 1 and (i >= len(in_shape) or in_shape[i] != 1):
            blocks.append(([], [j]))
            j += 1
            continue
        if i >= len(in_shape) or j >= len(out_shape):
            return None
        if not is_int(in_shape[i]) or not is_int(out_shape[j]):
            if is_int(in_shape[i]) or is_int(out_shape[j]):
                return None
            blocks.append(([i], [j]))
            i, j = i + 1, j + 1
            continue
        ins, outs, pi, pj = [i], [j], int(in_shape[i]), int(out_shape[j])
        while pi != pj:
            if pi < pj:
                i += 1
                if i >= len(in_shape) or not is_int(in_shape[i]):
                    return None
                pi *= int(in_shape[i])
                ins.append(i)
            else:
                j += 1
                if j >= len(out_shape) or not is_int(out_shape[j]):
                    return None
                pj *= int(out_shape[j])
                outs.append(j)
        blocks.append((ins, outs))
        i, j = i + 1, j + 1
    return blocks


def _either(chosen, default):
    return default if chosen is None else chosen


def _carrier(axes, shape):
    """The axis of a block that carries the channel identity: the largest (innermost on ties)."""
    return max(axes, key=lambda a: (int(shape[a]), a))


def _positions_of(dims, pos):
    """For each index on axis `pos` of a block of `dims`, the flat positions in the merged axis."""
    grid = np.arange(int(np.prod(dims))).reshape(dims)
    return np.moveaxis(grid, pos, 0).reshape(dims[pos], -1)


def reshape(b: Builder, node, tensor, axis):
    """Reshape/Flatten. A kept axis maps one to one; a channel axis merged with neighbours (Flatten into
    Gemm) maps each channel to a block of positions; a channel axis split into several (channel shuffle,
    heads) is carried by the largest new axis, so a removal takes the same index from every slice."""
    x, y = node.inputs[0], node.outputs[0]
    in_shape, out_shape = shape_of(x), shape_of(y)
    if node.op == "Reshape" and not isinstance(node.inputs[1], gs.Constant):
        raise Frozen("Reshape shape computed at run time")
    blocks = reshape_blocks(in_shape, out_shape)
    if blocks is None:
        raise Frozen("Reshape between shapes that cannot be aligned")
    from_x = same_tensor(tensor, x)
    block = next((bl for bl in blocks if axis in (bl[0] if from_x else bl[1])), None)
    if block is None or not block[0] or not block[1]:
        raise Frozen("axis of size 1 inserted or removed")
    ins, outs = block
    if len(ins) > 1 and len(outs) > 1:
        raise Frozen("Reshape regroups the channel axis with others")
    if len(ins) == 1 and len(outs) == 1:
        xs, ys = b.act(x, ins[0]), b.act(y, outs[0])
        b.link(xs, ys)
    elif len(outs) == 1:  # merge: input axes -> one output axis
        a = axis if from_x else _either(heads.merge_carrier(b, node, ins), _carrier(ins, in_shape))
        xs, ys = b.act(x, a), b.act(y, outs[0])
        dims = [int(in_shape[i]) for i in ins]
        positions = _positions_of(dims, ins.index(a))
        b.link(xs, ys, np.repeat(np.arange(xs.size), positions.shape[1]), positions.reshape(-1))
    else:  # split: one input axis -> output axes
        carrier = _either(heads.split_carrier(b, node, outs), _carrier(outs, out_shape))
        if not from_x and axis != carrier:
            raise Frozen("Reshape splits the channel axis and this part does not carry it")
        xs, ys = b.act(x, ins[0]), b.act(y, carrier)
        dims = [int(out_shape[o]) for o in outs]
        coords = np.unravel_index(np.arange(xs.size), dims)[outs.index(carrier)]
        b.link(xs, ys, np.arange(xs.size), coords)
    if node.op == "Reshape":
        def fix(keep, node=node, xs=xs, ys=ys, outs=outs, ins=ins, in_shape=in_shape):
            if ys.id not in keep and xs.id not in keep:
                return
            shape = node.inputs[1].values.copy()
            if len(outs) == 1:
                if shape[outs[0]] > 0:
                    kept = len(keep[xs.id]) if xs.id in keep else xs.size
                    rest = int(np.prod([int(in_shape[i]) for i in ins])) // xs.size
                    shape[outs[0]] = kept * rest
            elif shape[ys.axis] > 0:
                shape[ys.axis] = len(keep[ys.id])
            replace_input(node, 1, shape.astype(np.int64), "shape")
        b.on_rewrite(node, fix)


def _link_axes(b: Builder, node, tensor, axis, pairs, dropped: str = "") -> None:
    """Tie the input's and the output's axes paired in `pairs` [(input axis, output axis)]; an axis of
    `tensor` without a pair (inserted or squeezed, of size 1) carries no channels: Frozen(dropped)."""
    x, y = node.inputs[0], node.outputs[0]
    side = 0 if same_tensor(tensor, x) else 1
    for pair in pairs:
        if pair[side] == axis:
            b.link(b.act(x, pair[0]), b.act(y, pair[1]))
            return
    raise Frozen(dropped)


def transpose(b: Builder, node, tensor, axis):
    perm = [int(p) for p in node.attrs.get("perm", list(range(rank_of(node.inputs[0])))[::-1])]
    _link_axes(b, node, tensor, axis, [(p, j) for j, p in enumerate(perm)])


def unsqueeze(b: Builder, node, tensor, axis):
    rank_y = rank_of(node.outputs[0])
    axes = {a % rank_y for a in int_list(node, "axes", 1, default=[])}
    kept = [i for i in range(rank_y) if i not in axes]  # output axis of each input axis
    _link_axes(b, node, tensor, axis, list(enumerate(kept)), "inserted axis")


def squeeze(b: Builder, node, tensor, axis):
    in_shape = shape_of(node.inputs[0])
    rank = len(in_shape)
    axes = int_list(node, "axes", 1, default=None)
    axes = {a % rank for a in axes} if axes else {i for i, d in enumerate(in_shape) if d == 1}
    kept = [i for i in range(rank) if i not in axes]  # input axis of each output axis
    _link_axes(b, node, tensor, axis, [(k, j) for j, k in enumerate(kept)], "squeezed axis")


def reduce(b: Builder, node, tensor, axis):
    x, y = node.inputs[0], node.outputs[0]
    rank = rank_of(x)
    axes = int_list(node, "axes", 1, default=None)
    if not axes:
        if int(node.attrs.get("noop_with_empty_axes", 0)):
            b.link(b.act(x, axis), b.act(y, axis))
            return
        raise Frozen(f"{node.op} reduces every axis")
    axes = sorted(a % rank for a in axes)
    keepdims = int(node.attrs.get("keepdims", 1))
    out_of = {i: (i if keepdims else i - sum(a < i for a in axes)) for i in range(rank) if i not in axes}
    if same_tensor(tensor, x):
        if axis in axes:
            raise Frozen(f"{node.op} reduces over this axis")
        b.link(b.act(x, axis), b.act(y, out_of[axis]))
    else:
        src = [i for i, o in out_of.items() if o == axis]
        if not src:
            raise Frozen(f"{node.op} reduced axis")
        b.link(b.act(x, src[0]), b.act(y, axis))
