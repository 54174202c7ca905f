"""Can the model run at these input shapes? Asked of onnx's shape inference before onnxruntime is (issue 15).

Two things onnxruntime does not refuse cleanly: a tensor bigger than the memory we can spare (it tries the
allocation: gigabytes from a ConstantOfShape or Expand, or from an input shape) and a convolution or pooling
window on an empty spatial axis (an input too small for the network: a MaxPool output of size 0 made
onnxruntime die of SIGFPE in a GlobalAveragePool over zero elements). Both are read from one shape inference
of a weightless copy at the concrete shapes; a model whose shapes cannot be inferred gets no verdict here
(its feeds were still checked against the budget by the caller).
"""
from __future__ import annotations

import math

import numpy as np
import onnx

from .errors import SlimError
from .light import light_copy, set_input_dims, value_dims

# ops that slide a window over the spatial axes (2 and on) or average over them: an empty axis is invalid
WINDOW_OPS = frozenset({
    "Conv", "ConvInteger", "QLinearConv", "ConvTranspose", "MaxPool", "AveragePool", "LpPool", "MaxUnpool",
    "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "QLinearAveragePool", "QLinearGlobalAveragePool",
    "DeformConv", "Col2Im", "MaxRoiPool", "RoiAlign",
})


def infer_at(model: onnx.ModelProto, resolved: dict) -> onnx.ModelProto | None:
    """Shape inference of a weightless copy with the inputs set to `resolved`; None when it fails."""
    light = light_copy(model)
    light.graph.ClearField("value_info")
    set_input_dims(light, resolved)
    for data_prop in (True, False):  # data propagation sizes shapes computed from Shape ops (x.shape * k)
        try:
            return onnx.shape_inference.infer_shapes(light, data_prop=data_prop)
        except Exception:  # noqa: BLE001 - no verdict without shapes
            continue
    return None


def largest_tensor_bytes(inferred: onnx.ModelProto) -> int:
    """Bytes of the largest tensor whose dims shape inference knows (the least a run allocates at once)."""
    from .inputs import np_type
    largest = 0
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = value_dims(vi)
        if dims and all(d is not None and d > 0 for d in dims):
            itemsize = (np_type(vi.type.tensor_type.elem_type) or np.dtype(np.float32)).itemsize
            largest = max(largest, math.prod(dims) * itemsize)
    return largest


def empty_window(inferred: onnx.ModelProto) -> str | None:
    """'node X (MaxPool): input 1x32x1x15, output 1x32x0x7' for the first window op with an empty spatial
    axis on its first input or its output, else None."""
    shapes = {vi.name: value_dims(vi) for vi in list(inferred.graph.input) + list(inferred.graph.value_info)
              + list(inferred.graph.output)}
    for node in inferred.graph.node:
        if node.op_type not in WINDOW_OPS or not node.input or not node.output:
            continue
        dims_in, dims_out = shapes.get(node.input[0]), shapes.get(node.output[0])
        for dims in (dims_in, dims_out):
            if dims and len(dims) > 2 and any(d is not None and d <= 0 for d in dims[2:]):
                show = lambda ds: "x".join("?" if d is None else str(d) for d in ds) if ds else "?"  # noqa: E731
                return f"node '{node.name or node.output[0]}' ({node.op_type}): input {show(dims_in)}, output {show(dims_out)}"
    return None


def check_run(model: onnx.ModelProto, resolved: dict, feed_bytes: int, describe: str) -> None:
    """Refuse (SlimError) a run at `resolved` whose feeds plus largest tensor exceed the memory budget, or
    that puts a convolution or pooling window on an empty spatial axis."""
    from . import budget
    inferred = infer_at(model, resolved)
    if inferred is None:
        return
    budget.require(feed_bytes + largest_tensor_bytes(inferred), f"running the model on inputs {describe}")
    empty = empty_window(inferred)
    if empty:
        raise SlimError(f"the model cannot run on inputs {describe}: {empty} has an empty spatial axis "
                        f"(the input is too small for it)")
