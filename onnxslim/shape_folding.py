"""Small constant subgraphs of a shape-inference skeleton evaluated with numpy, so onnx shape inference sees
through them: exporters compute "same" padding and reshape targets with ConstantOfShape/Concat/Slice/Shape
chains that onnx's inference cannot follow. Only tensors up to SMALL elements, only the ops in _FOLDERS.

Why not onnxscript's folder (the cleanup pass's): measured on the 27 shared and corpus models
(benchmarks/RESULTS.md, issue 12), it left 49 EfficientNet-Lite0 and 6 silero-vad nodes with unknown MACs
(it does not evaluate Shape of the data-less weights this skeleton has) and took 3.3x the time.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .ops.macs import attrs_of, elements, static_shape

SMALL = 4096  # elements: larger tensors are weights, not shapes


def _opt(inputs, i):
    return inputs[i] if len(inputs) > i and inputs[i] is not None else None


def _axes_of(inputs, attrs):
    """Axes from input 1 (newer opsets) or the attribute (older ones)."""
    axes = _opt(inputs, 1)
    axes = attrs.get("axes") if axes is None else axes
    return None if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]


def _unsqueeze(node, inputs, attrs):
    x, axes = inputs[0], _axes_of(inputs, attrs)
    rank = x.ndim + len(axes)
    for a in sorted(a % rank for a in axes):
        x = np.expand_dims(x, a)
    return x


def _squeeze(node, inputs, attrs):
    axes = _axes_of(inputs, attrs)
    x = inputs[0]
    return np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(a % x.ndim for a in axes))


def _reshape(node, inputs, attrs):
    x, shape = inputs[0], [int(d) for d in inputs[1]]
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return x.reshape(shape)


def _slice(node, inputs, attrs):
    x = inputs[0]
    if "starts" in attrs:  # opset 1
        starts, ends, axes, steps = attrs["starts"], attrs["ends"], attrs.get("axes"), None
    else:
        starts, ends = list(inputs[1]), list(inputs[2])
        axes, steps = _opt(inputs, 3), _opt(inputs, 4)
    axes = list(range(len(starts))) if axes is None else [int(a) % x.ndim for a in axes]
    steps = [1] * len(starts) if steps is None else list(steps)
    index = [slice(None)] * x.ndim
    for a, s, e, st in zip(axes, starts, ends, steps):
        # python slicing clamps out-of-range bounds the way the ONNX spec does
        index[a] = slice(int(s), int(e), int(st))
    return x[tuple(index)]


def _constant_of_shape(node, inputs, attrs):
    shape = [int(d) for d in inputs[0]]
    value = attrs.get("value")
    fill = numpy_helper.to_array(value).reshape(-1) if value is not None else np.zeros(1, np.float32)
    if elements(shape) > SMALL:
        raise _TooBig
    return np.full(shape, fill[0], dtype=fill.dtype)


def _div(node, inputs, attrs):
    a, b = inputs
    if np.issubdtype(a.dtype, np.integer):
        return np.trunc(a / b).astype(a.dtype)  # ONNX integer Div truncates toward zero
    return a / b


def _expand(node, inputs, attrs):
    shape = np.broadcast_shapes(inputs[0].shape, tuple(int(d) for d in inputs[1]))
    if elements(shape) > SMALL:
        raise _TooBig
    return np.broadcast_to(inputs[0], shape).copy()


def _range(node, inputs, attrs):
    start, limit, delta = (np.asarray(v).reshape(()) for v in inputs)
    if delta == 0 or abs((limit - start) / delta) > SMALL:
        raise _TooBig
    return np.arange(start, limit, delta, dtype=start.dtype)


class _TooBig(Exception):
    pass


_FOLDERS = {
    "Identity": lambda n, i, a: i[0],
    "Cast": lambda n, i, a: i[0].astype(helper.tensor_dtype_to_np_dtype(a["to"])),
    "Gather": lambda n, i, a: np.take(i[0], i[1].astype(np.int64), axis=a.get("axis", 0)),
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Concat": lambda n, i, a: np.concatenate(i, axis=a["axis"]),
    "Reshape": _reshape,
    "Flatten": lambda n, i, a: i[0].reshape(int(np.prod(i[0].shape[:a.get("axis", 1)])), -1),
    "Slice": _slice,
    "Transpose": lambda n, i, a: np.transpose(i[0], a.get("perm")),
    "ConstantOfShape": _constant_of_shape,
    "Expand": _expand,
    "Range": _range,
    "Add": lambda n, i, a: i[0] + i[1],
    "Sub": lambda n, i, a: i[0] - i[1],
    "Mul": lambda n, i, a: i[0] * i[1],
    "Div": _div,
    "Neg": lambda n, i, a: -i[0],
    "Abs": lambda n, i, a: np.abs(i[0]),
    "Floor": lambda n, i, a: np.floor(i[0]),
    "Ceil": lambda n, i, a: np.ceil(i[0]),
    "Min": lambda n, i, a: np.minimum.reduce(i) if len(i) > 1 else i[0],
    "Max": lambda n, i, a: np.maximum.reduce(i) if len(i) > 1 else i[0],
    "Equal": lambda n, i, a: np.equal(i[0], i[1]),
    "Less": lambda n, i, a: np.less(i[0], i[1]),
    "Greater": lambda n, i, a: np.greater(i[0], i[1]),
    "Not": lambda n, i, a: np.logical_not(i[0]),
    "Where": lambda n, i, a: np.where(i[0], i[1], i[2]),
}


def fold_small_constants(skeleton: onnx.ModelProto, shapes: dict) -> int:
    """Replace small constant-only nodes (and Shape of static tensors) by initializers; returns how many."""
    g = skeleton.graph
    values = {t.name: _to_array(t) for t in g.initializer
              if elements(t.dims) <= SMALL and t.data_location != onnx.TensorProto.EXTERNAL}
    keep, folded = [], 0
    for node in g.node:
        result = _try_fold(node, values, shapes)
        if result is None:
            keep.append(node)
            continue
        values[node.output[0]] = result
        if node.op_type == "Constant":
            keep.append(node)
            continue
        g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(result), node.output[0]))
        folded += 1
    if folded:
        del g.node[:]
        g.node.extend(keep)
    return folded


def _to_array(tensor):
    try:
        return numpy_helper.to_array(tensor)
    except Exception:
        return None


def _try_fold(node, values, shapes):
    if node.domain not in ("", "ai.onnx") or len(node.output) != 1:
        return None
    try:
        if node.op_type == "Constant":
            if node.attribute and node.attribute[0].name == "value":
                t = node.attribute[0].t
                if elements(t.dims) > SMALL or not _has_data(t):
                    return None
            value = _constant_node_value(node)
            return None if value is None or value.size > SMALL else value
        if node.op_type in ("Shape", "Size"):
            shape = static_shape(shapes.get(node.input[0]))
            if shape is None:
                return None
            if node.op_type == "Size":
                return np.array(elements(shape), dtype=np.int64)
            a = attrs_of(node)
            return np.array(shape[a.get("start", 0):a.get("end")], dtype=np.int64)
        fold = _FOLDERS.get(node.op_type)
        if fold is None or not node.input:
            return None
        inputs = [values.get(name) if name else None for name in node.input]  # "": an omitted optional input
        if any(name and x is None for name, x in zip(node.input, inputs)):
            return None
        with np.errstate(all="ignore"):
            out = np.asarray(fold(node, inputs, attrs_of(node)))
        return out if out.size <= SMALL else None
    except Exception:  # _TooBig among them
        return None


def _has_data(t: onnx.TensorProto) -> bool:
    return bool(t.raw_data) or any(len(getattr(t, f)) for f in (
        "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data")) or elements(t.dims) == 0


_NUMBER_ATTRS = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64}


def _constant_node_value(node):
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name in _NUMBER_ATTRS:
            return np.array(helper.get_attribute_value(attr), dtype=_NUMBER_ATTRS[attr.name])
    return None
