"""Per-op channel rules: how the channel spaces of an op's inputs and outputs are tied.

A rule is `rule(builder, node, tensor, axis)`: `tensor`/`axis` is the space that reached the node; the rule
ties it (and whatever else moves with it) to the node's other spaces, or raises Frozen with a reason.
Rules of ops that create channels carry `seeds(node) -> [(tensor, axis)]`. Rules of ops whose attributes
or shape constants encode channel counts register a rewrite that fixes them after pruning.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from . import heads
from .attention_op import attention as attention_op
from .channels import BN_SCALE, EXIT, PARAM, SOURCE, Builder, Frozen
from .shape_values import dim_is_one


# -- small helpers ------------------------------------------------------------------------------------
def _shape(t: gs.Tensor) -> tuple:
    if t.shape is None:
        raise Frozen(f"shape of '{t.name}' is unknown")
    return tuple(t.shape)


def _rank(t: gs.Tensor) -> int:
    return len(_shape(t))


def _is_int(d) -> bool:
    return isinstance(d, (int, np.integer)) and d >= 0


def _present(node: gs.Node, i: int) -> bool:
    return i < len(node.inputs) and node.inputs[i].name != ""


def _ints(node: gs.Node, attr: str, index: int, default=None):
    """An int list given as an attribute (old opsets) or a constant input (new opsets)."""
    if attr in node.attrs:
        return [int(v) for v in np.atleast_1d(node.attrs[attr])]
    if _present(node, index):
        t = node.inputs[index]
        if not isinstance(t, gs.Constant):
            raise Frozen(f"{attr} of {node.op} is computed at run time")
        return [int(v) for v in np.atleast_1d(t.values)]
    return default


def _replace_input(node: gs.Node, index: int, values: np.ndarray, tag: str) -> None:
    """Constants may be shared between nodes: give this node its own new one."""
    const = gs.Constant(f"{node.name}_{tag}", np.asarray(values))
    while len(node.inputs) <= index:
        node.inputs.append(gs.Variable.empty())
    node.inputs[index] = const


def _same(a: gs.Tensor, b: gs.Tensor) -> bool:
    return a is not None and b is not None and a.name == b.name


# -- element-wise and pass-through ----------------------------------------------------------------------
def elementwise(operands=None):
    """Same index on the aligned axis of every operand after numpy broadcasting; a constant operand with
    that axis is a member (sliced), a broadcast operand (dim 1) is not."""
    def rule(b: Builder, node, tensor, axis):
        out = node.outputs[0]
        rank_out = _rank(out)
        o = axis if _same(tensor, out) else axis + rank_out - _rank(tensor)
        ys = b.act(out, o)
        indices = range(len(node.inputs)) if operands is None else operands
        for i in indices:
            if not _present(node, i):
                continue
            t = node.inputs[i]
            ax = o - (rank_out - _rank(t))
            if ax < 0:
                continue
            d = _shape(t)[ax]
            if _is_int(d) and d == 1 and ys.size != 1:
                continue
            if not _is_int(d) and dim_is_one(b, t, ax):  # a mask broadcast over the heads, sized at run time
                continue
            if not _is_int(d) or d != ys.size:
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
            if _present(node, i):
                b.link(ys, b.const(node, i, 0, role))
    return rule


def layer_norm(b: Builder, node, tensor, axis):
    x, y = node.inputs[0], node.outputs[0]
    start = int(node.attrs.get("axis", -1)) % _rank(x)
    if axis >= start:
        raise Frozen("LayerNormalization normalizes over this axis")
    b.link(b.act(x, axis), b.act(y, axis))


def softmax(b: Builder, node, tensor, axis):
    x, y = node.inputs[0], node.outputs[0]
    default = -1 if (b.graph.opset or 13) >= 13 else 1
    if axis == int(node.attrs.get("axis", default)) % _rank(x):
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
    if "axes" in node.attrs and axis not in [a % _rank(x) for a in node.attrs["axes"]]:
        b.link(b.act(x, axis), b.act(y, axis))
        return
    if "axes" in node.attrs:
        raise Frozen("Resize with axes over the channel axis")
    scales = _ints_float(node, scale_index)
    if scales is not None and len(scales) and scales[axis] != 1.0:
        raise Frozen("Resize scales the channel axis")
    xs, ys = b.act(x, axis), b.act(y, axis)
    b.link(xs, ys)
    if sizes_index is not None and _present(node, sizes_index):
        sizes_t = node.inputs[sizes_index]
        if not isinstance(sizes_t, gs.Constant):
            raise Frozen("Resize sizes computed at run time")
        if len(sizes_t.values):
            def fix(keep, node=node, ys=ys, axis=axis):
                if ys.id in keep:
                    sizes = node.inputs[sizes_index].values.copy()
                    sizes[axis] = len(keep[ys.id])
                    _replace_input(node, sizes_index, sizes.astype(np.int64), "sizes")
            b.on_rewrite(node, fix)


def _ints_float(node, index):
    if not _present(node, index):
        return None
    t = node.inputs[index]
    if not isinstance(t, gs.Constant):
        raise Frozen("scales computed at run time")
    return [float(v) for v in np.atleast_1d(t.values)]


def pad(b: Builder, node, tensor, axis):
    x, y = node.inputs[0], node.outputs[0]
    rank = _rank(x)
    pads = _ints(node, "pads", 1)
    axes = _ints(node, "axes", 3, default=list(range(rank)))
    axes = [a % rank for a in axes]
    if pads is None:
        raise Frozen("Pad without pads")
    if axis in axes:
        k = axes.index(axis)
        if pads[k] != 0 or pads[k + len(axes)] != 0:
            raise Frozen("Pad pads the channel axis")
    b.link(b.act(x, axis), b.act(y, axis))


# -- contracting ops: sources and exits -----------------------------------------------------------------
def _has_bias(node, index):
    return _present(node, index)


def conv(b: Builder, node, tensor, axis):
    """Conv: weight axis 1 contracts the input channels (exit); weight axis 0 and bias make the output
    channels (source). With groups > 1 whole conv groups are kept or removed, tying input and output."""
    x, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
    if not isinstance(w, gs.Constant):
        raise Frozen("weight is not a constant")
    if axis != 1:
        raise Frozen("not the channel axis")
    group = int(node.attrs.get("group", 1))
    if group == 1:
        if _same(tensor, x):
            b.link(b.act(x, 1), b.const(node, 1, 1, EXIT))
        else:
            ys = b.act(y, 1)
            b.link(ys, b.const(node, 1, 0, SOURCE))
            if _has_bias(node, 2):
                b.link(ys, b.const(node, 2, 0, PARAM))
        return
    xs, ys = b.act(x, 1), b.act(y, 1)
    per_in, per_out = w.shape[1], w.shape[0] // group
    b.link(ys, b.const(node, 1, 0, SOURCE))
    if _has_bias(node, 2):
        b.link(ys, b.const(node, 2, 0, PARAM))
    anchor = lambda idx, per: (idx // per) * per_out  # noqa: E731 - first output channel of the conv group
    b.link(xs, ys, np.arange(xs.size), anchor(np.arange(xs.size), per_in))
    b.link(ys, ys, np.arange(ys.size), anchor(np.arange(ys.size), per_out))

    def fix(keep, node=node, ys=ys):
        if ys.id in keep:
            node.attrs["group"] = len(keep[ys.id]) // per_out
    b.on_rewrite(node, fix)


conv.seeds = lambda node: [(node.outputs[0], 1)] if isinstance(node.inputs[1], gs.Constant) else []


def conv_transpose(b: Builder, node, tensor, axis):
    """ConvTranspose weight is [Cin, Cout/g, k...]: axis 0 is the exit, axis 1 the source."""
    x, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
    if not isinstance(w, gs.Constant):
        raise Frozen("weight is not a constant")
    if int(node.attrs.get("group", 1)) != 1:
        raise Frozen("grouped ConvTranspose")
    if axis != 1:
        raise Frozen("not the channel axis")
    if "output_shape" in node.attrs:
        raise Frozen("explicit output_shape")
    if _same(tensor, x):
        b.link(b.act(x, 1), b.const(node, 1, 0, EXIT))
    else:
        ys = b.act(y, 1)
        b.link(ys, b.const(node, 1, 1, SOURCE))
        if _has_bias(node, 2):
            b.link(ys, b.const(node, 2, 0, PARAM))


conv_transpose.seeds = lambda node: [(node.outputs[0], 1)] if isinstance(node.inputs[1], gs.Constant) and int(node.attrs.get("group", 1)) == 1 else []


def gemm(b: Builder, node, tensor, axis):
    a, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
    if not isinstance(w, gs.Constant):
        raise Frozen("B is not a constant")
    k_a = 0 if int(node.attrs.get("transA", 0)) else 1
    k_w = 1 if int(node.attrs.get("transB", 0)) else 0
    if _same(tensor, a):
        if axis != k_a:
            raise Frozen("Gemm row axis")
        b.link(b.act(a, k_a), b.const(node, 1, k_w, EXIT))
        return
    if axis != 1:
        raise Frozen("Gemm row axis")
    ys = b.act(y, 1)
    b.link(ys, b.const(node, 1, 1 - k_w, SOURCE))
    if _present(node, 2):
        c = node.inputs[2]
        shape = _shape(c)
        if len(shape) and shape[-1] == ys.size and ys.size != 1:
            b.link(ys, b.const(node, 2, len(shape) - 1, PARAM) if isinstance(c, gs.Constant) else b.act(c, len(shape) - 1))
        elif len(shape) and shape[-1] != 1:
            raise Frozen("Gemm C does not broadcast over the output features")


gemm.seeds = lambda node: [(node.outputs[0], 1)] if isinstance(node.inputs[1], gs.Constant) else []


def matmul(b: Builder, node, tensor, axis):
    """x[..., K] @ W[K, N] with a constant W: K is an exit, N a source; leading axes pass through."""
    a, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
    if not isinstance(a, gs.Constant) and not isinstance(w, gs.Constant):
        return heads.activation_matmul(b, node, tensor, axis)  # attention's scores and context
    if isinstance(a, gs.Constant) or not isinstance(w, gs.Constant) or len(w.shape) != 2:
        raise Frozen("MatMul without a constant 2-D right-hand weight")
    rank_a, rank_y = _rank(a), _rank(y)
    if rank_a < 2:
        raise Frozen("MatMul of a vector")
    if _same(tensor, a):
        if axis == rank_a - 1:
            b.link(b.act(a, axis), b.const(node, 1, 0, EXIT))
        else:
            b.link(b.act(a, axis), b.act(y, axis + rank_y - rank_a))
        return
    if axis == rank_y - 1:
        b.link(b.act(y, axis), b.const(node, 1, 1, SOURCE))
    else:
        b.link(b.act(a, axis - (rank_y - rank_a)), b.act(y, axis))


matmul.seeds = lambda node: ([(node.outputs[0], -1)] if isinstance(node.inputs[1], gs.Constant)
                             and len(node.inputs[1].shape) == 2 and not isinstance(node.inputs[0], gs.Constant) else [])


# -- layout ops ----------------------------------------------------------------------------------------
def concat(b: Builder, node, tensor, axis):
    y = node.outputs[0]
    rank = _rank(y)
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
        d = _shape(t)[cat]
        if not _is_int(d):
            raise Frozen(f"Concat input '{t.name}' has unknown size")
        if d:
            b.link(space(i, t, cat), ys, np.arange(d), offset + np.arange(d))
        offset += d


def split(b: Builder, node, tensor, axis):
    x = node.inputs[0]
    rank = _rank(x)
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
            _replace_input(node, 1, sizes, "split")
        else:
            node.attrs["split"] = [int(v) for v in sizes]
    b.on_rewrite(node, fix)


def slice_(b: Builder, node, tensor, axis):
    x, y = node.inputs[0], node.outputs[0]
    rank = _rank(x)
    starts, ends = _ints(node, "starts", 1), _ints(node, "ends", 2)
    axes = _ints(node, "axes", 3, default=list(range(len(starts or []))))
    steps = _ints(node, "steps", 4, default=[1] * len(axes))
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
        kept = keep[xs.id]
        new_starts = np.array(_ints(node, "starts", 1), dtype=np.int64)
        new_ends = np.array(_ints(node, "ends", 2), dtype=np.int64)
        new_starts[k] = np.searchsorted(kept, start)
        new_ends[k] = np.searchsorted(kept, end)
        _replace_input(node, 1, new_starts, "starts")
        _replace_input(node, 2, new_ends, "ends")
    b.on_rewrite(node, fix)


def _blocks(in_shape, out_shape):
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
        if not _is_int(in_shape[i]) or not _is_int(out_shape[j]):
            if _is_int(in_shape[i]) or _is_int(out_shape[j]):
                return None
            blocks.append(([i], [j]))
            i, j = i + 1, j + 1
            continue
        ins, outs, pi, pj = [i], [j], int(in_shape[i]), int(out_shape[j])
        while pi != pj:
            if pi < pj:
                i += 1
                if i >= len(in_shape) or not _is_int(in_shape[i]):
                    return None
                pi *= int(in_shape[i])
                ins.append(i)
            else:
                j += 1
                if j >= len(out_shape) or not _is_int(out_shape[j]):
                    return None
                pj *= int(out_shape[j])
                outs.append(j)
        blocks.append((ins, outs))
        i, j = i + 1, j + 1
    return blocks


def _carrier(axes, shape):
    """The axis of a block that carries the channel identity: the largest (innermost on ties)."""
    return max(axes, key=lambda a: (int(shape[a]), a))


def _either(chosen, default):
    return default if chosen is None else chosen


def _positions_of(dims, pos):
    """For each index on axis `pos` of a block of `dims`, the flat positions in the merged axis."""
    grid = np.arange(int(np.prod(dims))).reshape(dims)
    return np.moveaxis(grid, pos, 0).reshape(dims[pos], -1)


def reshape(b: Builder, node, tensor, axis):
    """Reshape/Flatten. A kept axis maps one to one; a channel axis merged with neighbours (Flatten into
    Gemm) maps each channel to a block of positions; a channel axis split into several (channel shuffle,
    heads) is carried by the largest new axis, so a removal takes the same index from every slice."""
    x, y = node.inputs[0], node.outputs[0]
    in_shape, out_shape = _shape(x), _shape(y)
    if node.op == "Reshape" and not isinstance(node.inputs[1], gs.Constant):
        raise Frozen("Reshape shape computed at run time")
    blocks = _blocks(in_shape, out_shape)
    if blocks is None:
        raise Frozen("Reshape between shapes that cannot be aligned")
    from_x = _same(tensor, x)
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
            _replace_input(node, 1, shape.astype(np.int64), "shape")
        b.on_rewrite(node, fix)


def transpose(b: Builder, node, tensor, axis):
    x, y = node.inputs[0], node.outputs[0]
    rank = _rank(x)
    perm = [int(p) for p in node.attrs.get("perm", list(range(rank))[::-1])]
    if _same(tensor, x):
        b.link(b.act(x, axis), b.act(y, perm.index(axis)))
    else:
        b.link(b.act(x, perm[axis]), b.act(y, axis))


def unsqueeze(b: Builder, node, tensor, axis):
    x, y = node.inputs[0], node.outputs[0]
    rank_y = _rank(y)
    axes = {a % rank_y for a in _ints(node, "axes", 1, default=[])}
    kept = [i for i in range(rank_y) if i not in axes]  # output axis of each input axis
    if _same(tensor, x):
        b.link(b.act(x, axis), b.act(y, kept[axis]))
    elif axis in axes:
        raise Frozen("inserted axis")
    else:
        b.link(b.act(x, kept.index(axis)), b.act(y, axis))


def squeeze(b: Builder, node, tensor, axis):
    x, y = node.inputs[0], node.outputs[0]
    in_shape = _shape(x)
    rank = len(in_shape)
    axes = _ints(node, "axes", 1, default=None)
    axes = {a % rank for a in axes} if axes else {i for i, d in enumerate(in_shape) if d == 1}
    kept = [i for i in range(rank) if i not in axes]  # input axis of each output axis
    if _same(tensor, x):
        if axis in axes:
            raise Frozen("squeezed axis")
        b.link(b.act(x, axis), b.act(y, kept.index(axis)))
    else:
        b.link(b.act(x, kept[axis]), b.act(y, axis))


def reduce(b: Builder, node, tensor, axis):
    x, y = node.inputs[0], node.outputs[0]
    rank = _rank(x)
    axes = _ints(node, "axes", 1, default=None)
    if not axes:
        if int(node.attrs.get("noop_with_empty_axes", 0)):
            b.link(b.act(x, axis), b.act(y, axis))
            return
        raise Frozen(f"{node.op} reduces every axis")
    axes = sorted(a % rank for a in axes)
    keepdims = int(node.attrs.get("keepdims", 1))
    out_of = {i: (i if keepdims else i - sum(a < i for a in axes)) for i in range(rank) if i not in axes}
    if _same(tensor, x):
        if axis in axes:
            raise Frozen(f"{node.op} reduces over this axis")
        b.link(b.act(x, axis), b.act(y, out_of[axis]))
    else:
        src = [i for i, o in out_of.items() if o == axis]
        if not src:
            raise Frozen(f"{node.op} reduced axis")
        b.link(b.act(x, src[0]), b.act(y, axis))


UNARY = ["Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Erf", "Gelu", "Softplus", "Softsign",
         "Elu", "Selu", "Celu", "ThresholdedRelu", "Mish", "Exp", "Log", "Sqrt", "Abs", "Neg", "Reciprocal",
         "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Identity", "Cast", "Dropout", "Clip", "Swish"]
BINARY = ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu"]

RULES: dict = {op: elementwise([0]) for op in UNARY}
RULES.update({op: elementwise() for op in BINARY})
RULES.update({
    "BatchNormalization": normalization({1: BN_SCALE, 2: PARAM, 3: PARAM, 4: PARAM}),
    "InstanceNormalization": normalization({1: PARAM, 2: PARAM}),
    "LayerNormalization": layer_norm,
    "Softmax": softmax, "LogSoftmax": softmax,
    "MaxPool": channel_preserving, "AveragePool": channel_preserving, "LpPool": channel_preserving,
    "GlobalAveragePool": channel_preserving, "GlobalMaxPool": channel_preserving, "GlobalLpPool": channel_preserving,
    "Resize": resize, "Upsample": resize,
    "Pad": pad,
    "Conv": conv, "ConvTranspose": conv_transpose, "Gemm": gemm, "MatMul": matmul,
    "Attention": attention_op, "Gather": heads.gather,
    "Concat": concat, "Split": split, "Slice": slice_,
    "Reshape": reshape, "Flatten": reshape,
    "Transpose": transpose, "Unsqueeze": unsqueeze, "Squeeze": squeeze,
    **{op: reduce for op in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL1", "ReduceL2", "ReduceProd",
                             "ReduceLogSumExp", "ReduceSumSquare")},
})
