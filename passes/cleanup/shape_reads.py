"""Reads of static dims from tensors with symbolic ones, made constant: Shape(start, end) -> [Gather |
Slice] where every dim read is a known int, though other dims (a symbolic batch) are not.

onnxscript's folder folds a Shape only when the whole shape is static; exported models read one static dim
(channels, heads, head size) of a tensor whose batch or sequence is symbolic, then Unsqueeze/Concat it into
a Reshape shape. Folding the read lets the folder fold the rest of that subgraph.
"""
from __future__ import annotations

import numpy as np
import onnx_ir as ir


def fold_shape_reads(graph) -> int:
    """Replace Shape / Shape->Gather / Shape->Slice outputs whose values are known by initializers, on an
    onnx-ir graph whose values carry inferred shapes. Returns the number of tensors made constant."""
    count = 0
    for node in list(graph):
        if node.domain not in ("", "ai.onnx") or node.op_type != "Shape" or node.inputs[0] is None:
            continue
        dims = _dims(node.inputs[0], node)
        if dims is None:
            continue
        out = node.outputs[0]
        if all(isinstance(d, int) for d in dims):
            count += _replace(graph, out, np.array(dims, dtype=np.int64))
            continue
        for user, _ in list(out.uses()):  # Gather or Slice reads of it, when every value they pick is static
            if user.domain not in ("", "ai.onnx") or user.inputs[0] is not out:
                continue
            values = read_static(user.op_type, _attr(user, "axis", 0), [_const(v) for v in user.inputs[1:]], dims)
            if values is not None:
                count += _replace(graph, user.outputs[0], values)
    return count


def _dims(value, shape_node) -> list | None:
    """The dims Shape(start, end) reads: ints for static dims, None for symbolic ones."""
    shape = value.shape
    if shape is None:
        return None
    dims = [d if isinstance(d, int) and d >= 0 else None for d in shape.dims]
    start = _attr(shape_node, "start", 0)
    end = _attr(shape_node, "end", None)
    return dims[start:end]  # Python slicing clamps like the spec: negative from the end, out of range to the ends


def read_static(op_type: str, axis: int, consts: list, dims: list) -> np.ndarray | None:
    """What Gather(shape, consts[0], axis) or Slice(shape, *consts) returns when `shape` holds `dims` (ints,
    None where symbolic): the int64 values when every element picked is static, else None. `consts` holds
    the op's other inputs as arrays, `...` for an omitted one, None for a run-time one. Shared by the
    onnx-ir folder step here and the rewrite rule shape_static_read."""
    if any(c is None for c in consts if c is not ...):
        return None
    table = np.array(dims, dtype=object)
    try:
        if op_type == "Gather" and axis == 0 and len(consts) == 1:
            picked = table[np.asarray(consts[0], dtype=np.int64)]
        elif op_type == "Slice" and len(consts) >= 2:
            starts, ends = consts[0], consts[1]
            axes = consts[2] if len(consts) > 2 and consts[2] is not ... else np.array([0])
            steps = consts[3] if len(consts) > 3 and consts[3] is not ... else np.ones_like(starts)
            if list(np.asarray(axes).reshape(-1)) not in ([0], [-1]):
                return None
            picked = table[int(starts.reshape(-1)[0]):int(ends.reshape(-1)[0]):int(steps.reshape(-1)[0])]
        else:
            return None
    except (IndexError, ValueError, TypeError):
        return None  # an out-of-range read fails at run time; leave it to fail there
    flat = np.asarray(picked, dtype=object).reshape(-1)
    if any(v is None for v in flat):
        return None
    return np.asarray(picked, dtype=object).astype(np.int64)


def _const(value):
    """The value's constant array; `...` for an omitted optional input; None when not constant."""
    if value is None:
        return ...
    tensor = value.const_value
    return None if tensor is None else tensor.numpy()


def _attr(node, name: str, default):
    attr = node.attributes.get(name)
    return default if attr is None else attr.value


def _replace(graph, value, array: np.ndarray) -> int:
    """Point every use of `value` at a new initializer holding `array` (graph outputs keep their producer)."""
    if value.is_graph_output() or not value.uses():
        return 0
    ir.convenience.replace_all_uses_with(value, new_initializer(graph, f"{value.name}_static", array, ir.DataType.INT64))
    return 1


def new_initializer(graph, base: str, array: np.ndarray, dtype) -> ir.Value:
    """An initializer of `graph` holding `array`, named `base` (or `base1`, `base2`... when that is taken)."""
    name, k = base, 0
    while name in graph.initializers:
        k += 1
        name = f"{base}{k}"
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(dtype),
                     const_value=ir.tensor(array, dtype=dtype, name=name))
    graph.register_initializer(value)
    return value
