"""Range checks of the attributes and parameter shapes of the ops whose arithmetic onnxslim does itself
(MACs, pruning, folding): Conv, ConvTranspose, pools, BatchNormalization, Gemm and LayerNormalization
parameters. Each failure is one SlimError
naming the node (issue 15: strides=[0,0] was a ZeroDivisionError, pads of the wrong length an IndexError,
a group that does not divide the channels an onnxruntime failure deep in the int8 pass)."""
from __future__ import annotations

import onnx

from .errors import SlimError

# ops whose `axis` indexes input 0's dims (Flatten also takes axis == rank); onnx's inference lets an
# out-of-range Gather axis through to onnxruntime's kernel
_AXIS_OPS = {op: 0 for op in ("Gather", "GatherElements", "Concat", "Split", "Softmax", "LogSoftmax", "Hardmax",
                              "ArgMax", "ArgMin", "LayerNormalization")} | {"Flatten": 1}
_WINDOWED = ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool", "ConvInteger", "QLinearConv")


def check_node_attributes(node: onnx.NodeProto, shapes: dict, consts: dict) -> None:
    """`shapes`: inferred shapes by tensor name (None for unknown dims); `consts`: dims of constants."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if node.op_type in _WINDOWED:
        _check_window(node, attrs, shapes, consts)
    if node.op_type in _AXIS_OPS and isinstance(attrs.get("axis"), int):
        _check_axis(node, attrs["axis"], shapes)
    if node.op_type in ("Conv", "ConvTranspose"):
        _check_conv_params(node, attrs, shapes, consts)
    elif node.op_type == "BatchNormalization":
        _check_bn(node, shapes, consts)
    elif node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
        _check_broadcast(node, node.input[2], shapes.get(node.output[0]) if node.output else None, shapes, consts)
    elif node.op_type == "LayerNormalization":
        x = shapes.get(node.input[0]) if node.input else None
        axis = attrs.get("axis", -1)
        if x is not None and isinstance(axis, int) and -len(x) <= axis < len(x):
            for name in node.input[1:3]:
                if name:
                    _check_broadcast(node, name, x[axis:], shapes, consts)


def _fail(node: onnx.NodeProto, why: str):
    label = node.name or (node.output[0] if node.output else "?")
    raise SlimError(f"node '{label}' ({node.op_type}): {why}")


def _spatial_rank(node, attrs, shapes, consts) -> int | None:
    """Spatial dims: from the weight's rank, else kernel_shape, else the input's rank."""
    if node.op_type in ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv"):
        idx = 3 if node.op_type == "QLinearConv" else 1
        w = consts.get(node.input[idx]) if len(node.input) > idx else None
        if w is None and len(node.input) > idx:
            w = shapes.get(node.input[idx])
        if w is not None:
            if len(w) < 3:
                _fail(node, f"weight '{node.input[idx]}' has rank {len(w)}; a convolution weight needs rank >= 3")
            return len(w) - 2
    if "kernel_shape" in attrs:
        return len(attrs["kernel_shape"])
    x = shapes.get(node.input[0]) if node.input else None
    return len(x) - 2 if x is not None and len(x) >= 3 else None


def _check_window(node, attrs, shapes, consts) -> None:
    n = _spatial_rank(node, attrs, shapes, consts)
    x = shapes.get(node.input[0]) if node.input else None
    if n is not None and x is not None and len(x) != n + 2:
        _fail(node, f"input '{node.input[0]}' has rank {len(x)}, {n + 2} expected for {n} spatial dims (its weight's or kernel's)")
    for name, low, factor in (("strides", 1, 1), ("dilations", 1, 1), ("kernel_shape", 1, 1), ("pads", 0, 2)):
        value = attrs.get(name)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(v, int) for v in value):
            _fail(node, f"attribute {name} must be a list of integers, got {value!r}")
        if n is not None and len(value) != factor * n:
            _fail(node, f"attribute {name} has {len(value)} values; {factor * n} expected for {n} spatial dims")
        if any(v < low for v in value):
            _fail(node, f"attribute {name} {value} must be {'positive' if low else 'non-negative'}")
    if "group" in attrs and (not isinstance(attrs["group"], int) or attrs["group"] < 1):
        _fail(node, f"attribute group {attrs['group']!r} must be a positive integer")


def _check_axis(node, axis: int, shapes) -> None:
    x = shapes.get(node.input[0]) if node.input else None
    if x is None:
        return
    rank, extra = len(x), _AXIS_OPS[node.op_type]
    if not -rank - extra <= axis < rank + extra:
        _fail(node, f"axis {axis} is out of range for input '{node.input[0]}' of rank {rank}")


def _check_conv_params(node, attrs, shapes, consts) -> None:
    group = attrs.get("group", 1)
    w = consts.get(node.input[1]) if len(node.input) > 1 else None
    if w is None:
        return  # a weight computed at run time: its shape is the runtime's business
    x = shapes.get(node.input[0])
    channels = x[1] if x is not None and len(x) > 1 else None
    kernel = attrs.get("kernel_shape")
    if kernel is not None and len(w) > 2 and list(kernel) != list(w[2:]):
        _fail(node, f"kernel_shape {list(kernel)} does not match weight '{node.input[1]}' of shape {list(w)}")
    if node.op_type == "Conv":
        out, in_per_group = w[0], w[1]
        if out % group:
            _fail(node, f"group {group} does not divide the {out} output channels of weight '{node.input[1]}'")
        if channels is not None and channels != in_per_group * group:
            _fail(node, f"input has {channels} channels but weight '{node.input[1]}' expects {in_per_group} x group {group}")
    else:  # ConvTranspose: weight [C_in, C_out / group, k...]
        out = w[1] * group
        if w[0] % group:
            _fail(node, f"group {group} does not divide the {w[0]} input channels of weight '{node.input[1]}'")
        if channels is not None and channels != w[0]:
            _fail(node, f"input has {channels} channels but weight '{node.input[1]}' expects {w[0]}")
    if len(node.input) > 2 and node.input[2]:
        b = consts.get(node.input[2]) or shapes.get(node.input[2])
        if b is not None and (len(b) != 1 or (b[0] is not None and b[0] != out)):
            _fail(node, f"bias '{node.input[2]}' has shape {list(b)}; [{out}] expected")


def _check_bn(node, shapes, consts) -> None:
    x = shapes.get(node.input[0])
    channels = x[1] if x is not None and len(x) > 1 and x[1] else None
    for name in node.input[1:5]:
        dims = consts.get(name) or shapes.get(name)
        if dims is None:
            continue
        if len(dims) != 1:
            _fail(node, f"parameter '{name}' has shape {list(dims)}; BatchNormalization parameters are 1-D")
        if channels is None:
            channels = dims[0]
        elif dims[0] is not None and dims[0] != channels:
            _fail(node, f"parameter '{name}' has {dims[0]} values for {channels} channels")


def _check_broadcast(node, name: str, target, shapes, consts) -> None:
    """Parameter `name` must broadcast to `target` one way (Gemm's C to [M, N], LayerNormalization's scale and
    bias to the normalized dims): onnx's inference lets a bias one element short through to onnxruntime,
    which fails at run time, after the passes have run."""
    dims = consts.get(name) or shapes.get(name)
    if dims is None or target is None:
        return
    fits = len(dims) <= len(target) and all(
        d is None or t is None or d in (1, t) for d, t in zip(reversed(dims), reversed(list(target))))
    if not fits:
        shown = ["?" if t is None else t for t in target]
        _fail(node, f"parameter '{name}' has shape {list(dims)}; it does not broadcast to {shown}")
