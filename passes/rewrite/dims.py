"""Which dims of two tensors are provably equal, for every input the model accepts: each dim is traced up
through the ops that pass it on unchanged (elementwise ops, Transpose, Reshape copies, Gemm/MatMul rows,
Conv batch, LSTM sequence, ...) to the dim it was taken from; two dims with the same origin are equal.

Why our own and not the symbols of shape inference: onnx names a dim it cannot compute with a fresh symbol
but also reuses symbols the model declares (two inputs both saying `batch`, graph outputs declaring a wrong
shape), and onnxruntime's symbolic inference merges two symbols when it sees them broadcast together,
though one of them may be 1 at run time. Here an origin is a (tensor, axis) pair or a static int, and a
step is taken only where the op's definition makes the dims equal; anything else stops the trace, which
can only miss an equality, never invent one. Static dims come from onnx shape inference (already trusted
by the folder)."""
from __future__ import annotations

import numpy as np

from .util import const, rank, static_dims

MAX_DEPTH = 200  # a trace longer than this stops (the answer is then "not proven")

SAME_SHAPE = {
    "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "BatchNormalization", "Cast", "CastLike", "Ceil",
    "Celu", "Clip", "Cos", "Cosh", "CumSum", "DequantizeLinear", "Dropout", "DynamicQuantizeLinear", "Elu",
    "Erf", "Exp", "Floor", "Gelu", "HardSigmoid", "HardSwish", "Hardmax", "Identity", "InstanceNormalization",
    "IsInf", "IsNaN", "LayerNormalization", "LeakyRelu", "Log", "LogSoftmax", "LpNormalization", "Mish", "Neg",
    "Not", "QuantizeLinear", "Reciprocal", "Relu", "Round", "Selu", "Shrink", "Sigmoid", "Sign", "Sin", "Sinh",
    "Softmax", "Softplus", "Softsign", "Sqrt", "Tan", "Tanh", "ThresholdedRelu",
}
BROADCAST = {"Add", "And", "BitShift", "Div", "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Max",
             "Mean", "Min", "Mod", "Mul", "Or", "Pow", "PRelu", "Sub", "Sum", "Where", "Xor"}
BATCH_FIRST = {"Conv", "ConvInteger", "ConvTranspose", "QLinearConv", "MaxPool", "AveragePool", "LpPool",
               "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"}
RECURRENT = {"LSTM", "GRU", "RNN", "DynamicQuantizeLSTM"}


class Dims:
    """origin(t, axis): a static int, or the (tensor name, axis) the dim was taken from."""

    def __init__(self):
        self._memo: dict = {}

    def same(self, a, i: int, b, j: int) -> bool:
        x, y = self.origin(a, i), self.origin(b, j)
        return x is not None and x == y

    def origin(self, t, axis: int, depth: int = 0):
        dims = static_dims(t)  # None for an op shape inference does not know (contrib LSTM): traced all the same
        if axis < 0 or (dims is not None and axis >= len(dims)):
            return None
        if dims is not None and dims[axis] is not None:
            return int(dims[axis])
        key = (t.name, axis)
        if key in self._memo:
            return self._memo[key]
        self._memo[key] = key  # a cycle (there is none in a DAG) or a deep trace ends here
        if depth < MAX_DEPTH and len(t.inputs) == 1:
            found = self._step(t.inputs[0], t, axis, depth + 1)
            if found is not None:
                self._memo[key] = found
        return self._memo[key]

    def rank(self, t, depth: int = 0) -> int | None:
        """The rank from shape inference, else from the op that made t (shape inference stops at an op it
        does not know, though a Transpose or a Reshape after it fixes the rank)."""
        r = rank(t)
        if r is not None or depth > MAX_DEPTH or len(getattr(t, "inputs", ())) != 1:
            return r
        node = t.inputs[0]
        if node.op == "Transpose" and "perm" in node.attrs:
            return len(node.attrs["perm"])
        if node.op == "Reshape":  # as many dims as the target has entries
            target = static_dims(node.inputs[1])
            return target[0] if target is not None and len(target) == 1 else None
        if node.op in RECURRENT:
            return 4 if node.outputs[0] is t else 3
        if node.op == "DynamicQuantizeLinear" and node.outputs[0] is not t:
            return 0  # the scale and the zero point
        if node.op in SAME_SHAPE and node.outputs[0] is t:
            return self.rank(node.inputs[0], depth + 1)
        if node.op in BROADCAST or node.op in ("MatMul", "MatMulInteger"):
            ranks = [self.rank(x, depth + 1) for x in node.inputs]
            return None if None in ranks or not ranks else max(ranks)
        return None

    def _step(self, node, out, axis: int, depth: int):
        """The origin of `out`'s dim `axis` one op up, or None when the op does not pass it on."""
        contrib = node.domain == "com.microsoft"  # ops named like standard ones: only those known to match
        if node.domain not in ("", None, "ai.onnx") and not (contrib and (node.op in SAME_SHAPE or node.op in RECURRENT)):
            return None
        src = _source(node, out, axis, self)
        if src == "broadcast":
            return self._broadcast(node, out, axis, depth)
        if isinstance(src, tuple):
            return self.origin(src[0], src[1], depth)
        return src

    def _broadcast(self, node, out, axis: int, depth: int):
        """Multidirectional broadcasting: the output dim equals every input dim that is not 1, so when all
        those have one origin it is that origin (none of them: 1)."""
        r = self.rank(out)
        if r is None:
            return None
        found = []
        for t in node.inputs:
            tr = self.rank(t)
            if tr is None:
                return None
            k = axis - (r - tr)
            if k < 0:
                continue
            o = self.origin(t, k, depth)
            if o is None:
                return None
            if o != 1:
                found.append(o)
        if not found:
            return 1
        return found[0] if all(o == found[0] for o in found) else None


def _source(node, out, axis: int, dims: Dims):
    """(tensor, axis) or int the dim comes from, "broadcast", or None."""
    op, x = node.op, node.inputs[0] if node.inputs else None
    first_out = node.outputs[0] is out
    if op in SAME_SHAPE and first_out:
        return (x, axis)
    if op in BROADCAST:
        return "broadcast"
    if op in BATCH_FIRST and first_out:
        return (x, 0) if axis == 0 else None
    if op == "RoiAlign":
        return (node.inputs[1], 0) if axis == 0 else None
    if op in RECURRENT:
        return _recurrent(node, out, axis)
    if op == "Reshape":
        return _reshape(node, axis, dims)
    if op in ("MatMul", "MatMulInteger"):
        return _matmul(node, out, axis, dims)
    handler = _HANDLERS.get(op)
    return handler(node, out, axis) if handler is not None else None


def _ints(node, name: str, index: int):
    """An int list from attribute `name` or the constant input `index`; None when absent or run-time."""
    if name in node.attrs:
        value = node.attrs[name]
        return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]
    if len(node.inputs) > index and node.inputs[index].name:
        value = const(node.inputs[index])
        return None if value is None else [int(v) for v in value.reshape(-1)]
    return None


def _transpose(node, out, axis):
    perm = node.attrs.get("perm")
    r = rank(out)
    perm = list(perm) if perm is not None else (list(range(r))[::-1] if r is not None else None)
    return (node.inputs[0], int(perm[axis])) if perm is not None and axis < len(perm) else None


def _unsqueeze(node, out, axis):
    axes, r = _ints(node, "axes", 1), rank(out)
    if axes is None or r is None:
        return None
    axes = sorted(a % r for a in axes)
    if axis in axes:
        return 1
    return (node.inputs[0], axis - sum(a < axis for a in axes))


def _squeeze(node, out, axis):
    r = rank(node.inputs[0])
    axes = _ints(node, "axes", 1)
    if r is None or axes is None:
        return None
    kept = [k for k in range(r) if k not in {a % r for a in axes}]
    return (node.inputs[0], kept[axis]) if axis < len(kept) else None


def _keeps_other_axes(node, out, axis):
    """Concat, Split, Slice, Pad, Softmax-like ops: dims off the axes they act on are the input's."""
    r = rank(out)
    if r is None:
        return None
    if node.op in ("Concat", "Split"):
        acted = [int(node.attrs.get("axis", 0))]
    elif node.op == "Slice":
        acted = _ints(node, "axes", 3)
        if acted is None and not (len(node.inputs) > 3 and node.inputs[3].name):
            starts = _ints(node, "starts", 1)
            acted = None if starts is None else list(range(len(starts)))
    else:  # Pad: the axes whose pads are not both 0
        pads = _ints(node, "pads", 1)
        if pads is None or len(pads) != 2 * r or (len(node.inputs) > 3 and node.inputs[3].name):
            return None
        acted = [k for k in range(r) if pads[k] or pads[k + r]]
    if acted is None:
        return None
    return None if axis in {a % r for a in acted} else (node.inputs[0], axis)


def _gather(node, out, axis):
    data, indices = node.inputs[0], node.inputs[1]
    rd, ri = rank(data), rank(indices)
    if rd is None or ri is None:
        return None
    a = int(node.attrs.get("axis", 0)) % rd
    if axis < a:
        return (data, axis)
    if axis < a + ri:
        return (indices, axis - a)
    return (data, axis - ri + 1)


def _gemm(node, out, axis):
    if axis == 0:
        return (node.inputs[0], 1 if int(node.attrs.get("transA", 0)) else 0)
    return (node.inputs[1], 0 if int(node.attrs.get("transB", 0)) else 1)


def _matmul(node, out, axis, dims: Dims):
    a, b, r = node.inputs[0], node.inputs[1], dims.rank(out)
    ra, rb = dims.rank(a), dims.rank(b)
    if r is None or ra is None or rb is None or ra < 2 or rb < 2:
        return None
    if axis == r - 1:
        return (b, rb - 1)
    if axis == r - 2:
        return (a, ra - 2)
    if ra == rb == r:  # batch dims of equal-rank operands: broadcast, traced only when one side is static 1
        if dims.origin(b, axis) == 1:
            return (a, axis)
        if dims.origin(a, axis) == 1:
            return (b, axis)
    return None


def _recurrent(node, out, axis):
    """Y: [seq, num_directions, batch, hidden]; Y_h / Y_c: [num_directions, batch, hidden] (layout 0)."""
    if int(node.attrs.get("layout", 0)) != 0 or "hidden_size" not in node.attrs:
        return None
    x = node.inputs[0]
    index = next(i for i, o in enumerate(node.outputs) if o is out)
    direction = node.attrs.get("direction", "forward")
    directions = 2 if (direction.decode() if isinstance(direction, bytes) else direction) == "bidirectional" else 1
    layout = [(x, 0), directions, (x, 1), int(node.attrs["hidden_size"])] if index == 0 else [directions, (x, 1), int(node.attrs["hidden_size"])]
    return layout[axis] if axis < len(layout) else None


def _value(t):
    """A constant's value, or a Concat of constants' (left for the fold after the rules)."""
    value = const(t)
    if value is not None or len(getattr(t, "inputs", ())) != 1 or t.inputs[0].op != "Concat":
        return value
    parts = [const(p) for p in t.inputs[0].inputs]
    return None if any(p is None for p in parts) else np.concatenate([p.reshape(-1) for p in parts])


def _reshape(node, axis, dims: Dims):
    """A 0 entry copies the input's dim; a -1 entry is what the element count leaves: the one input dim
    not copied and not static when the static ones multiply to the target's sizes, or a static size when
    every input dim is known. Input dims count as static when traced to an int (an LSTM's hidden size)."""
    target = _value(node.inputs[1])
    r = dims.rank(node.inputs[0])
    if target is None or r is None or int(node.attrs.get("allowzero", 0)):
        return None
    target = [int(v) for v in target.reshape(-1)]
    entry = target[axis]
    if entry == 0:
        return (node.inputs[0], axis)
    if entry != -1:
        return entry if entry > 0 else None
    origins = [dims.origin(node.inputs[0], k) for k in range(r)]
    copied = {k for k, v in enumerate(target) if v == 0}
    free = [k for k, o in enumerate(origins) if k not in copied and not isinstance(o, int)]
    known = int(np.prod([o for k, o in enumerate(origins) if k not in copied and isinstance(o, int)], dtype=np.int64))
    wanted = int(np.prod([v for v in target if v > 0], dtype=np.int64))
    if wanted <= 0 or known <= 0:
        return None
    if not free and known % wanted == 0:
        return known // wanted
    if len(free) == 1 and known == wanted:
        return (node.inputs[0], free[0])
    return None


def _flatten(node, out, axis):
    """Flatten(x, a): dim 0 is x's dim 0 when a == 1; dim 1 is x's last dim when a == rank - 1."""
    r = rank(node.inputs[0])
    a = int(node.attrs.get("axis", 1))
    if r is None:
        return None
    a = a + r if a < 0 else a
    if axis == 0 and a == 1:
        return (node.inputs[0], 0)
    if axis == 1 and a == r - 1:
        return (node.inputs[0], r - 1)
    return None


def _reduce(node, out, axis):
    r = rank(node.inputs[0])
    axes = [int(node.attrs.get("axis", 0))] if node.op in ("ArgMax", "ArgMin") else _ints(node, "axes", 1)
    if r is None or axes is None:
        return None
    reduced = {a % r for a in axes}
    if int(node.attrs.get("keepdims", 1)):
        return None if axis in reduced else (node.inputs[0], axis)
    kept = [k for k in range(r) if k not in reduced]
    return (node.inputs[0], kept[axis]) if axis < len(kept) else None


_HANDLERS = {
    "Transpose": _transpose, "Unsqueeze": _unsqueeze, "Squeeze": _squeeze, "Concat": _keeps_other_axes,
    "Split": _keeps_other_axes, "Slice": _keeps_other_axes, "Pad": _keeps_other_axes, "Gather": _gather,
    "Gemm": _gemm, "Flatten": _flatten,
    **{op: _reduce for op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                              "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin")},
}


def dims_read(t, dims: Dims | None = None, depth: int = 0) -> list | None:
    """When the 1-D (or scalar) int tensor t holds dims of other tensors, read through Shape -> Gather /
    Slice / Unsqueeze / Concat: [(tensor, axis) per element], else None. Each element equals that dim at
    run time, whatever its value."""
    node = t.inputs[0] if len(getattr(t, "inputs", ())) == 1 else None
    if node is None or depth > 16 or node.domain not in ("", None, "ai.onnx"):
        return None
    dims = dims or Dims()
    if node.op == "Shape":
        r = dims.rank(node.inputs[0])
        if r is None:
            return None
        start, end = int(node.attrs.get("start", 0)), node.attrs.get("end")
        return [(node.inputs[0], k) for k in range(r)[start:None if end is None else int(end)]]
    if node.op == "Concat" and int(node.attrs.get("axis", 0)) in (0, -1):
        parts = [dims_read(p, dims, depth + 1) for p in node.inputs]
        return None if any(p is None for p in parts) else [e for p in parts for e in p]
    if node.op == "Unsqueeze" and rank(t) == 1:
        return dims_read(node.inputs[0], dims, depth + 1)
    source = dims_read(node.inputs[0], dims, depth + 1) if node.op in ("Gather", "Slice") else None
    if source is None:
        return None
    if node.op == "Gather" and int(node.attrs.get("axis", 0)) in (0, -1):
        index = const(node.inputs[1])
        if index is None or index.ndim > 1 or not all(-len(source) <= int(i) < len(source) for i in index.reshape(-1)):
            return None
        return [source[int(i)] for i in index.reshape(-1)]
    return _slice_read(node, source)


def _slice_read(node, source: list) -> list | None:
    starts, ends = _ints(node, "starts", 1), _ints(node, "ends", 2)
    axes, steps = _ints(node, "axes", 3), _ints(node, "steps", 4)
    given = [len(node.inputs) > k and node.inputs[k].name for k in (3, 4)]
    if starts is None or ends is None or len(starts) != 1 or (given[0] and axes is None) or (given[1] and steps is None):
        return None
    if (axes or [0])[0] not in (0, -1) or (steps or [1])[0] == 0:
        return None
    return source[slice(starts[0], ends[0], (steps or [1])[0])]
