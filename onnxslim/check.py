"""Refuse an invalid model before any pass works on it (issue 15).

A model is untrusted input. What the passes read must be what it claims: every tensor's data matches its
dims and element type (checked by byte counts in Python integers, never by allocating from the dims: a
tensor claiming [2**31, 2**31, 1, 1] with 36 KB of data is refused, not materialized), element types are
known, and the attributes of the ops we compute with are in range (Conv/pool strides, pads, dilations,
kernel lengths, groups, BatchNormalization parameters). onnx's strict shape inference covers most ops'
attribute rules; the explicit checks here cover what it lets through (Conv groups, weight ranks, bias
lengths) and models whose input shapes are unknown, where inference checks nothing.

Every refusal is a SlimError (exit 2) naming the tensor or the node.
"""
from __future__ import annotations

import math
import re
import warnings

import numpy as np
import onnx
from onnx import numpy_helper

from .attributes import check_node_attributes
from .errors import SlimError, SlimWarning
from . import ondisk
from .external import all_tensors
from .light import light_copy, value_dims

T = onnx.TensorProto
_KNOWN_TYPES = set(T.DataType.values()) - {T.UNDEFINED}
# element types stored packed, several to a byte in raw_data
_PACKED_BITS = {getattr(T, n): b for n, b in (("UINT4", 4), ("INT4", 4), ("FLOAT4E2M1", 4), ("UINT2", 2),
                                              ("INT2", 2), ("FLOAT6E2M3", 6), ("FLOAT6E3M2", 6)) if hasattr(T, n)}
# which typed field holds which element types, and how many entries one element takes
_TYPED_FIELDS = {
    "float_data": {T.FLOAT: 1, T.COMPLEX64: 2},
    "double_data": {T.DOUBLE: 1, T.COMPLEX128: 2},
    "int64_data": {T.INT64: 1},
    "uint64_data": {T.UINT32: 1, T.UINT64: 1},
    "string_data": {T.STRING: 1},
}


def check_model(model: onnx.ModelProto) -> None:
    """Tensors first (they are what could make us allocate), then the nodes."""
    check_tensors(model)
    check_nodes(model)


def warn_values(model: onnx.ModelProto) -> None:
    """One SlimWarning per odd but legal value the passes will carry along: non-finite float weights, a
    BatchNormalization variance + epsilon <= 0 (its output is NaN/Inf there, in the original too)."""
    floats = {T.FLOAT: np.float32, T.DOUBLE: np.float64, T.FLOAT16: np.float16}

    def finite(t):  # raw bytes viewed in place: no conversion copy of every weight
        if ondisk.is_lazy(t):
            return ondisk.all_finite(t, floats[t.data_type])
        if t.HasField("raw_data"):
            return bool(np.isfinite(np.frombuffer(t.raw_data, dtype=floats[t.data_type])).all())
        return bool(np.isfinite(numpy_helper.to_array(t)).all())

    bad = [t.name for t in model.graph.initializer if t.data_type in floats and not finite(t)]
    if bad:
        more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
        warnings.warn(SlimWarning(f"weights {', '.join(repr(b) for b in bad[:3])}{more} hold NaN or Inf values; "
                                  "outputs that depend on them are NaN/Inf in the original too"))
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "BatchNormalization" or len(node.input) < 5 or node.input[4] not in inits:
            continue
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        var = numpy_helper.to_array(inits[node.input[4]]).astype(np.float64)
        low = int((var + eps <= 0).sum())
        if low:
            warnings.warn(SlimWarning(f"BatchNormalization '{node.name}': variance + epsilon <= 0 for {low} "
                                      "channel(s); its output is NaN/Inf there"))


# -- tensors -------------------------------------------------------------------------------------------------

def check_tensors(model: onnx.ModelProto) -> None:
    for tensor in all_tensors(model):
        check_tensor(tensor)


def element_bytes(data_type: int) -> float | None:
    """Bytes per element (fractions for packed types), None for strings."""
    if data_type in _PACKED_BITS:
        return _PACKED_BITS[data_type] / 8
    if data_type == T.STRING:
        return None
    return onnx.helper.tensor_dtype_to_np_dtype(data_type).itemsize


def check_tensor(tensor: onnx.TensorProto) -> None:
    name = tensor.name or "(unnamed)"
    if tensor.data_type not in _KNOWN_TYPES:
        raise SlimError(f"tensor '{name}' has an unknown element type {tensor.data_type}")
    dims = [int(d) for d in tensor.dims]
    if any(d < 0 for d in dims):
        raise SlimError(f"tensor '{name}' has a negative dim {dims}")
    if tensor.data_location == T.EXTERNAL:
        return  # not loaded (only a caller that reads no data leaves it so)
    count = math.prod(dims)  # Python ints: no wrap-around however large the dims claim to be
    kind = T.DataType.Name(tensor.data_type)
    if tensor.HasField("raw_data"):
        size = element_bytes(tensor.data_type)
        if size is None:
            raise SlimError(f"tensor '{name}' is a string tensor with raw_data, which ONNX does not allow")
        want, have = math.ceil(count * size), len(tensor.raw_data)
        if want != have:
            raise SlimError(f"tensor '{name}' declares {kind} {dims} ({want} bytes) but holds {have} bytes of data")
        return
    entries, field = _typed_entries(tensor)
    per = _TYPED_FIELDS.get(field, {}).get(tensor.data_type, 1)
    if entries == 0 and count == 0:
        return
    packed = tensor.data_type in _PACKED_BITS and entries == math.ceil(count * _PACKED_BITS[tensor.data_type] / 32)
    if entries != count * per and not packed:
        raise SlimError(f"tensor '{name}' declares {kind} {dims} ({count} elements) but holds {entries // per} elements")


def _typed_entries(tensor: onnx.TensorProto) -> tuple[int, str]:
    """(entries, field) of the typed data field in use; the field must be the one of the element type."""
    for field in ("float_data", "double_data", "int64_data", "uint64_data", "string_data", "int32_data"):
        n = len(getattr(tensor, field))
        if not n:
            continue
        allowed = _TYPED_FIELDS.get(field)
        if allowed is not None and tensor.data_type not in allowed:
            raise SlimError(f"tensor '{tensor.name}' is {T.DataType.Name(tensor.data_type)} but stores its data in {field}")
        return n, field
    return 0, ""


# -- nodes ---------------------------------------------------------------------------------------------------

def check_nodes(model: onnx.ModelProto) -> None:
    light = _inference_copy(model)
    try:
        shapes = _shapes(onnx.shape_inference.infer_shapes(light, check_type=True, strict_mode=True))
    except onnx.shape_inference.InferenceError as err:
        # our own checks first, on what lenient inference gets: their message says what is wrong
        # (a rank-3 input to a 2-D Conv) where onnx names a symptom (its dilations' length)
        _check_attributes(model, _lenient_shapes(light))
        if _inside_standard_function_body(err, model):  # onnx's expansion of a standard op, not the model: onnxruntime runs it
            return
        raise _inference_error(err) from None
    except Exception:  # inference itself failing (not a verdict on the model): check what we can without it
        shapes = {}
    _check_attributes(model, shapes)


def _check_attributes(model: onnx.ModelProto, shapes: dict) -> None:
    consts = {t.name: list(t.dims) for t in model.graph.initializer}
    consts.update((node.output[0], list(attr.t.dims)) for node in model.graph.node if node.op_type == "Constant" and node.output
                  for attr in node.attribute if attr.name == "value")
    for node in model.graph.node:
        if node.domain in ("", "ai.onnx"):
            check_node_attributes(node, shapes, consts)


def check_tensor_io(model: onnx.ModelProto, what: str) -> None:
    """Channel analysis and the passes that edit layers work on onnx-graphsurgeon graphs, which carry tensors
    only: an optional/sequence/map graph input or output cannot be exported again (it was an
    UnboundLocalError deep inside it). The lossless path handles such models (its graph steps fall back),
    so only `what` (inspect, prune, low-rank, quantize) is refused, in one line."""
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for vi in values:
            which = vi.type.WhichOneof("value")
            if which not in ("tensor_type", None):
                name = which.replace("_type", "")
                raise SlimError(f"graph {kind} '{vi.name}' is of type {name}, not a tensor; {what} handles models "
                                "whose inputs and outputs are tensors (the bare command optimizes it losslessly)")


_ERROR = re.compile(r"\(op_type:([^,]*), node name: (.*?)\): (?:\[\w+\] )?(.*?)(?= \(op_type:|$)")


def _inference_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A weightless copy for onnx's strict shape inference (what onnxruntime runs when it loads a model).
    Declared intermediate and output shapes are dropped: onnxruntime only warns when they disagree, so they
    must not make us refuse. Sparse initializers become dense placeholders, as onnxruntime densifies them."""
    light = light_copy(model)
    light.graph.ClearField("value_info")
    for sparse in light.graph.sparse_initializer:
        light.graph.initializer.add(name=sparse.values.name, data_type=sparse.values.data_type, dims=sparse.dims)
    light.graph.ClearField("sparse_initializer")
    for out in light.graph.output:
        if out.type.HasField("tensor_type"):  # touching tensor_type of a sequence output would make it a tensor
            out.type.tensor_type.ClearField("shape")
    return light


def _inside_standard_function_body(err: Exception, model: onnx.ModelProto) -> bool:
    """Every error onnx lists is nested inside the function body of a standard op (onnx 1.x fails on the
    Constant in MeanVarianceNormalization's own definition): a verdict on onnx's definition, not on the
    model, and onnxruntime runs its own kernel. Errors inside the model's own functions still refuse it."""
    text = " ".join(str(err).split())
    outer = re.findall(r"\(op_type:([^,)]*)\): \[ShapeInferenceError\] Inference error\(s\): \(op_type:", text)
    local = {f.name for f in model.functions}
    return bool(outer) and text.count("(op_type:") == 2 * len(outer) and not local & set(outer)


def _inference_error(err: Exception) -> SlimError:
    """The first error of onnx's list (the later ones are mostly its consequences), naming the node."""
    text = " ".join(str(err).split())
    found = _ERROR.search(text)
    if found:
        op, node, why = found.groups()
        return SlimError(f"node '{node}' ({op}): {why}")
    return SlimError(f"invalid model: {text[:300]}")


def _lenient_shapes(light: onnx.ModelProto) -> dict[str, list]:
    try:
        return _shapes(onnx.shape_inference.infer_shapes(light))
    except Exception:
        return {}


def _shapes(inferred: onnx.ModelProto) -> dict[str, list]:
    values = list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output)
    return {vi.name: dims for vi in values if (dims := value_dims(vi)) is not None}
