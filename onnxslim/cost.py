"""MACs and parameters per node, computed from shapes after onnx shape inference.

MACs (multiply-accumulates) are counted for the ops that dominate compute: Conv, ConvTranspose, Gemm,
MatMul, Einsum (two or more operands) and their integer/QLinear variants (ConvInteger, QLinearConv,
MatMulInteger, QLinearMatMul). Every other op counts 0 MACs (element-wise ops, pooling, normalization,
Softmax... are cheap next to these and have no agreed MAC definition), and so do ops outside the default
ONNX domain (com.microsoft fused ops, local functions). Bias additions are not counted.

MACs are for the shapes the inputs are given: dynamic dims take `input_shapes`, a dynamic first dim
defaults to batch 1, and any other dynamic dim stays symbolic: nodes whose MACs depend on it count as
unknown (`macs` None). The pipeline passes the run shapes it chose (onnxslim.runshapes), so MACs are
numbers whenever the model was found to run at some size.

Params are the elements of a node's constant inputs: initializers and Constant-node outputs, also when
they reach the node through constant-only nodes (DequantizeLinear of an int8 weight, Cast, Transpose...).
Each constant is counted once model-wide, at its first consumer. int64 constants are not counted: they are
shapes, axes and indices, not weights. Subgraphs (If/Loop/Scan bodies) are not looked into.

Exporters often compute "same" padding or reshape targets with small constant subgraphs that onnx shape
inference cannot see through (Pad fed by ConstantOfShape/Concat/Slice/Transpose...). Such subgraphs are
evaluated here with numpy (only small tensors, only the ops in `_FOLDERS`) and shape inference rerun, so
the MACs of the nodes behind them are known.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .graph import infer_shapes, light_copy
from .inputs import symbolic_shapes

# tensors up to this many elements keep their data in the shape-inference copy (they may be shapes)
_SMALL = 4096
_MAX_ROUNDS = 4


@dataclass
class NodeCost:
    name: str
    op_type: str
    macs: int | None  # None: the node does compute but its shapes are unknown after inference
    params: int
    output_shape: tuple | None  # dims are ints, or None where unknown; None if the rank is unknown


# -- public API ---------------------------------------------------------------------------------------

def node_costs(model: onnx.ModelProto, input_shapes: dict | None = None) -> list[NodeCost]:
    """MACs and params of every node of the main graph, in graph order (see the module docstring)."""
    shapes = _inferred_shapes(model, input_shapes)
    params = _node_params(model)
    costs = []
    for index, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{index}"
        macs = _macs(node, shapes)
        out = shapes.get(node.output[0]) if node.output else None
        costs.append(NodeCost(name, node.op_type, macs, params[index], out))
    return costs


def model_cost(model: onnx.ModelProto, input_shapes: dict | None = None) -> dict:
    """Totals for reports: {"macs", "params", "unknown_macs_nodes", "per_node"}.

    `macs` sums the nodes whose MACs are known; `unknown_macs_nodes` names the compute nodes whose shapes
    stayed unknown (their MACs are missing from the total). `per_node` lists the nodes with MACs, params or
    unknown MACs (plain data-movement nodes are left out), as JSON-ready dicts.
    """
    costs = node_costs(model, input_shapes)
    per_node = []
    for c in costs:
        if c.macs is None or c.macs or c.params:
            d = asdict(c)
            d["output_shape"] = list(c.output_shape) if c.output_shape is not None else None
            per_node.append(d)
    return {
        "macs": sum(c.macs for c in costs if c.macs),
        "params": sum(c.params for c in costs),
        "unknown_macs_nodes": [c.name for c in costs if c.macs is None],
        "per_node": per_node,
    }


# -- shapes -------------------------------------------------------------------------------------------

def inferred_shapes(model: onnx.ModelProto, input_shapes: dict | None = None) -> dict[str, tuple | None]:
    """{tensor: shape} after shape inference (and folding of small shape subgraphs); None for unknown dims."""
    return _inferred_shapes(model, input_shapes)


def _inferred_shapes(model: onnx.ModelProto, input_shapes: dict | None):
    """{tensor name: shape tuple (None for unknown dims)} after inference on a weightless copy."""
    resolved = {k: v for k, v in symbolic_shapes(model, input_shapes).items() if v is not None}
    skeleton = _skeleton(model, resolved)
    for _ in range(_MAX_ROUNDS):
        try:
            inferred = infer_shapes(skeleton)
        except Exception:
            # a model onnx cannot infer still has input and weight shapes: count what they give
            inferred = skeleton
        shapes = _shape_map(inferred)
        if not _fold_constants(skeleton, shapes):
            break
    return shapes


def _skeleton(model: onnx.ModelProto, input_shapes: dict) -> onnx.ModelProto:
    """A copy without the data of large tensors (inference needs only their dims) and with concrete inputs."""
    skel = light_copy(model)
    skel.graph.ClearField("value_info")
    inits = {t.name for t in skel.graph.initializer}
    for vi in skel.graph.input:
        if vi.name in input_shapes and vi.name not in inits:
            shape = vi.type.tensor_type.shape
            del shape.dim[:]
            for d in input_shapes[vi.name]:
                dim = shape.dim.add()
                if isinstance(d, str):
                    dim.dim_param = d  # symbolic: shape inference carries it, MACs behind it are unknown
                else:
                    dim.dim_value = int(d)
    # exporters' value_info may carry symbolic dims that would only get in the way of the concrete ones
    for out in skel.graph.output:
        if out.type.HasField("tensor_type"):
            out.type.tensor_type.ClearField("shape")
    _standard_stand_ins(skel)
    return skel


def _standard_stand_ins(skel: onnx.ModelProto) -> None:
    """onnx cannot infer onnxruntime's weight-only ops, and every shape after one would stay unknown: for
    inference only, MatMulNBits becomes a MatMul and GatherBlockQuantized a Gather on a data-less float
    weight of the logical shape (K x N; rows x packed columns unpacked)."""
    dims = {t.name: list(t.dims) for t in skel.graph.initializer}
    packed = {t.name for t in skel.graph.initializer if t.data_type == onnx.TensorProto.UINT8}
    for k, node in enumerate(skel.graph.node):
        attrs = _attrs(node) if node.domain == "com.microsoft" else {}
        if node.op_type == "MatMulNBits" and attrs:
            shape = [int(attrs["K"]), int(attrs["N"])]
            inputs = [node.input[0], f"{node.name or k}.shape_stand_in"]
            op = "MatMul"
        elif node.op_type == "GatherBlockQuantized" and attrs and node.input[0] in dims and int(attrs.get("gather_axis", 0)) == 0:
            rows, cols = dims[node.input[0]][0], dims[node.input[0]][-1]
            per = 8 // int(attrs.get("bits", 4)) if node.input[0] in packed else 1  # uint8 data packs along columns
            shape, inputs, op = [rows, cols * per], [f"{node.name or k}.shape_stand_in", node.input[1]], "Gather"
        else:
            continue
        stand_in = onnx.TensorProto(name=inputs[0 if op == "Gather" else 1], data_type=onnx.TensorProto.FLOAT, dims=shape)
        stand_in.data_location = onnx.TensorProto.EXTERNAL  # dims only: never read
        stand_in.external_data.add(key="location", value="stand-in")
        skel.graph.initializer.append(stand_in)
        skel.graph.node[k].CopyFrom(helper.make_node(op, inputs, list(node.output), name=node.name))


def _shape_map(model: onnx.ModelProto) -> dict[str, tuple | None]:
    shapes: dict[str, tuple | None] = {}
    g = model.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if tt is None or not tt.HasField("shape"):
            shapes.setdefault(vi.name, None)
            continue
        shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim)
    for t in g.initializer:
        shapes[t.name] = tuple(int(d) for d in t.dims)
    for node in g.node:
        if node.op_type == "Constant" and node.output:
            value = _constant_attr_shape(node)
            if value is not None:
                shapes[node.output[0]] = value
    return shapes


def _constant_attr_shape(node: onnx.NodeProto) -> tuple | None:
    for attr in node.attribute:
        if attr.name == "value":
            return tuple(int(d) for d in attr.t.dims)
        if attr.name in ("value_float", "value_int", "value_string"):
            return ()
        if attr.name in ("value_floats", "value_ints", "value_strings"):
            return (len(helper.get_attribute_value(attr)),)
        if attr.name == "sparse_value":
            return tuple(int(d) for d in attr.sparse_tensor.dims)
    return None


def _static(shape) -> tuple | None:
    if shape is None or any(d is None for d in shape):
        return None
    return shape


def _elements(dims) -> int:
    return int(math.prod(int(d) for d in dims))


# -- constant subgraph evaluation ---------------------------------------------------------------------

def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _opt(inputs, i):
    return inputs[i] if len(inputs) > i and inputs[i] is not None else None


def _axes_of(node, inputs, attrs, i=1):
    axes = _opt(inputs, i)
    if axes is None:
        axes = attrs.get("axes")
    return None if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]


def _unsqueeze(node, inputs, attrs):
    x, axes = inputs[0], _axes_of(node, inputs, attrs)
    rank = x.ndim + len(axes)
    for a in sorted(a % rank for a in axes):
        x = np.expand_dims(x, a)
    return x


def _squeeze(node, inputs, attrs):
    axes = _axes_of(node, inputs, attrs)
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
    if _elements(shape) > _SMALL:
        raise _TooBig
    return np.full(shape, fill[0], dtype=fill.dtype)


def _div(node, inputs, attrs):
    a, b = inputs
    if np.issubdtype(a.dtype, np.integer):
        return np.trunc(a / b).astype(a.dtype)  # ONNX integer Div truncates toward zero
    return a / b


def _expand(node, inputs, attrs):
    shape = np.broadcast_shapes(inputs[0].shape, tuple(int(d) for d in inputs[1]))
    if _elements(shape) > _SMALL:
        raise _TooBig
    return np.broadcast_to(inputs[0], shape).copy()


def _range(node, inputs, attrs):
    start, limit, delta = (np.asarray(v).reshape(()) for v in inputs)
    if delta == 0 or abs((limit - start) / delta) > _SMALL:
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


def _fold_constants(skeleton: onnx.ModelProto, shapes: dict) -> int:
    """Replace small constant-only nodes (and Shape of static tensors) by initializers; returns how many."""
    g = skeleton.graph
    values: dict[str, np.ndarray] = {}
    for t in g.initializer:
        if _elements(t.dims) <= _SMALL and t.data_location != onnx.TensorProto.EXTERNAL:
            values[t.name] = _to_array(t)
    keep, folded = [], 0
    for node in g.node:
        result = _try_fold(node, values, shapes)
        if result is None:
            keep.append(node)
            continue
        if node.op_type == "Constant":
            values[node.output[0]] = result
            keep.append(node)
            continue
        values[node.output[0]] = result
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
                if _elements(t.dims) > _SMALL or not _has_data(t):
                    return None
            value = _constant_node_value(node)
            return None if value is None or value.size > _SMALL else value
        if node.op_type in ("Shape", "Size"):
            shape = _static(shapes.get(node.input[0]))
            if shape is None:
                return None
            if node.op_type == "Size":
                return np.array(_elements(shape), dtype=np.int64)
            a = _attrs(node)
            start, end = a.get("start", 0), a.get("end")
            return np.array(shape[start:end] if end is not None else shape[start:], dtype=np.int64)
        fold = _FOLDERS.get(node.op_type)
        if fold is None or not node.input:
            return None
        inputs = []
        for name in node.input:
            if name == "":
                inputs.append(None)
            elif name in values and values[name] is not None:
                inputs.append(values[name])
            else:
                return None
        with np.errstate(all="ignore"):
            out = np.asarray(fold(node, inputs, _attrs(node)))
        return out if out.size <= _SMALL else None
    except (_TooBig, Exception):
        return None


def _has_data(t: onnx.TensorProto) -> bool:
    return bool(t.raw_data) or any(len(getattr(t, f)) for f in (
        "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data")) or _elements(t.dims) == 0


def _constant_node_value(node):
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name == "value_float":
            return np.array(attr.f, dtype=np.float32)
        if attr.name == "value_floats":
            return np.array(list(attr.floats), dtype=np.float32)
        if attr.name == "value_int":
            return np.array(attr.i, dtype=np.int64)
        if attr.name == "value_ints":
            return np.array(list(attr.ints), dtype=np.int64)
    return None


# -- params -------------------------------------------------------------------------------------------

def _node_params(model: onnx.ModelProto) -> list[int]:
    """Per node (graph order): elements of constants first reaching a non-constant node there."""
    g = model.graph
    sizes: dict[str, int] = {}
    for t in g.initializer:
        sizes[t.name] = 0 if t.data_type == onnx.TensorProto.INT64 else _elements(t.dims)
    for t in g.sparse_initializer:
        sizes[t.values.name] = 0 if t.values.data_type == onnx.TensorProto.INT64 else _elements(t.dims)
    # each constant-derived tensor carries the set of source constants it was computed from
    sources: dict[str, frozenset] = {name: frozenset([name]) for name in sizes}
    counted: set[str] = set()
    result = []
    for node in g.node:
        if node.op_type == "Constant" and node.output:
            sizes[node.output[0]] = _constant_elements(node)
            sources[node.output[0]] = frozenset([node.output[0]])
            result.append(0)
            continue
        used = [n for n in node.input if n]
        if used and all(n in sources for n in used):
            merged = frozenset().union(*(sources[n] for n in used))
            for out in node.output:
                sources[out] = merged
            result.append(0)
            continue
        params = 0
        for name in used:
            for src in sources.get(name, ()):
                if src not in counted:
                    counted.add(src)
                    params += sizes.get(src, 0)
        result.append(params)
    return result


def _constant_elements(node: onnx.NodeProto) -> int:
    for attr in node.attribute:
        if attr.name == "value":
            return 0 if attr.t.data_type == onnx.TensorProto.INT64 else _elements(attr.t.dims)
        if attr.name == "sparse_value":
            return _elements(attr.sparse_tensor.dims)
        if attr.name == "value_float":
            return 1
        if attr.name == "value_floats":
            return len(attr.floats)
    return 0  # value_int(s) and strings: shapes and labels, not weights


# -- MACs ---------------------------------------------------------------------------------------------

# op -> (index of the activation input, index of the weight input)
_CONV_INPUTS = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3)}
_MATMUL_INPUTS = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3)}


def _macs(node: onnx.NodeProto, shapes: dict) -> int | None:
    op = node.op_type
    get = lambda i: shapes.get(node.input[i]) if len(node.input) > i and node.input[i] else None  # noqa: E731
    if node.domain == "com.microsoft" and op == "MatMulNBits":  # weight-only int4/int8: K x N per input row
        attrs, a = _attrs(node), _static(tuple(get(0) or ())) if get(0) is not None else None
        return int(np.prod(a[:-1], dtype=np.int64)) * int(attrs["K"]) * int(attrs["N"]) if a else None
    if node.domain not in ("", "ai.onnx"):
        return 0
    out = shapes.get(node.output[0]) if node.output else None
    if op in _CONV_INPUTS:
        x, w = _CONV_INPUTS[op]
        return _conv_macs(_attrs(node), get(x), get(w), out)
    if op == "ConvTranspose":
        return _conv_transpose_macs(_attrs(node), get(0), get(1))
    if op == "Gemm":
        return _gemm_macs(_attrs(node), get(0), get(1), out)
    if op in _MATMUL_INPUTS:
        a, b = _MATMUL_INPUTS[op]
        return _matmul_macs(get(a), get(b), out)
    if op == "Einsum":
        return _einsum_macs(_attrs(node).get("equation", b""), [shapes.get(n) for n in node.input])
    return 0


def conv_output_spatial(in_spatial, kernel, *, strides=None, pads=None, dilations=None, auto_pad="NOTSET") -> tuple:
    """Output spatial dims of Conv per the ONNX spec (pads are [begin..., end...])."""
    n = len(in_spatial)
    strides = strides or [1] * n
    dilations = dilations or [1] * n
    pads = pads or [0] * (2 * n)
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    out = []
    for i in range(n):
        span = dilations[i] * (kernel[i] - 1) + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out.append(-(-in_spatial[i] // strides[i]))
        elif auto_pad == "VALID":
            out.append((in_spatial[i] - span) // strides[i] + 1)
        else:
            out.append((in_spatial[i] + pads[i] + pads[i + n] - span) // strides[i] + 1)
    return tuple(out)


def _conv_macs(attrs, x, w, out) -> int | None:
    group = int(attrs.get("group", 1))
    kernel = _static(tuple(w[2:])) if w is not None and len(w) > 2 else None
    kernel = kernel or (tuple(attrs["kernel_shape"]) if "kernel_shape" in attrs else None)
    # input channels per group: the weight's axis 1, else the input's channels / group
    c_per_group = w[1] if w is not None and len(w) > 1 and w[1] is not None else None
    if c_per_group is None and x is not None and len(x) > 1 and x[1] is not None:
        c_per_group = x[1] // group
    if kernel is None or c_per_group is None:
        return None
    out = _static(out)
    if out is None:
        x_s, m = _static(x), (w[0] if w is not None else None)
        if x_s is None or m is None:
            return None
        spatial = conv_output_spatial(x_s[2:], kernel, strides=attrs.get("strides"), pads=attrs.get("pads"),
                                      dilations=attrs.get("dilations"), auto_pad=attrs.get("auto_pad", "NOTSET"))
        out = (x_s[0], m) + spatial
    return _elements(out) * int(c_per_group) * _elements(kernel)


def _conv_transpose_macs(attrs, x, w) -> int | None:
    # every input element is multiplied by the (out_channels / group) x kernel weights of its channel
    x, w = _static(x), _static(w)
    if x is None or w is None:
        return None
    return _elements(x) * _elements(w[1:])


def _gemm_macs(attrs, a, b, out) -> int | None:
    a, b, out = _static(a), _static(b), _static(out)
    m = k = n = None
    if a is not None and len(a) == 2:
        m, k = (a[1], a[0]) if attrs.get("transA", 0) else a
    if b is not None and len(b) == 2:
        kb, n = (b[1], b[0]) if attrs.get("transB", 0) else b
        k = k if k is not None else kb
    if out is not None and len(out) == 2:
        m = m if m is not None else out[0]
        n = n if n is not None else out[1]
    if None in (m, k, n):
        return None
    return int(m) * int(k) * int(n)


def _matmul_macs(a, b, out) -> int | None:
    k = None
    if a is not None and len(a) >= 1 and a[-1] is not None:
        k = a[-1]
    elif b is not None and len(b) >= 1:
        k = b[-2] if len(b) >= 2 else b[0]
    out = _static(out)
    if out is None:
        a, b = _static(a), _static(b)
        if a is None or b is None:
            return None
        try:
            out = _matmul_shape(a, b)
        except ValueError:
            return None
    if k is None:
        return None
    return _elements(out) * int(k)


def _matmul_shape(a, b) -> tuple:
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    batch = np.broadcast_shapes(a2[:-2], b2[:-2])
    shape = tuple(batch) + (a2[-2], b2[-1])
    if len(a) == 1:
        shape = shape[:-2] + shape[-1:]
    if len(b) == 1:
        shape = shape[:-1]
    return shape


def _einsum_macs(equation, shapes) -> int | None:
    """Product of the sizes of all labels: each output element sums over the contracted labels."""
    if len(shapes) < 2:
        return 0
    eq = (equation.decode() if isinstance(equation, bytes) else equation).replace(" ", "")
    lhs = eq.split("->")[0].split(",")
    if len(lhs) != len(shapes) or any(_static(s) is None for s in shapes):
        return None
    sizes, ellipsis = {}, []
    for terms, shape in zip(lhs, shapes):
        labels = terms.replace("...", ".")
        if "." in labels:
            head, tail = labels.split(".")
            n_ell = len(shape) - len(head) - len(tail)
            ellipsis.append(tuple(shape[len(head):len(head) + n_ell]))
            dims = list(shape[:len(head)]) + list(shape[len(shape) - len(tail):]) if tail else list(shape[:len(head)])
            labels = head + tail
        else:
            dims = list(shape)
        if len(labels) != len(dims):
            return None
        for label, d in zip(labels, dims):
            sizes[label] = max(sizes.get(label, 1), int(d))
    try:
        ell = np.broadcast_shapes(*ellipsis) if ellipsis else ()
    except ValueError:
        return None
    return _elements(sizes.values()) * _elements(ell)
