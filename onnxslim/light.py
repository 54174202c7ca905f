"""A model without the data of its large tensors: what shape inference and the model checks need (dims
only), without copying or serializing the weights (what made those slow and memory-hungry)."""
from __future__ import annotations

import math

import onnx

SMALL_TENSOR = 4096  # elements; smaller tensors keep their data for shape inference (they may be shapes)


def value_dims(vi: onnx.ValueInfoProto) -> list | None:
    """A value's dims (None for each unknown one); None when it is no tensor or its rank is unknown."""
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]


def set_input_dims(model: onnx.ModelProto, shapes: dict) -> None:
    """The graph inputs named in `shapes` (onnxslim.inputs' specs: tensors, no initializers) get those dims; a
    str dim is symbolic (shape inference carries it)."""
    for vi in model.graph.input:
        if vi.name in shapes:
            shape = vi.type.tensor_type.shape
            shape.ClearField("dim")
            for d in shapes[vi.name]:
                shape.dim.add(**({"dim_param": d} if isinstance(d, str) else {"dim_value": int(d)}))


def is_repeated(field) -> bool:
    # protobuf >= 6 dropped FieldDescriptor.label in favour of is_repeated
    repeated = getattr(field, "is_repeated", None)
    return bool(repeated) if repeated is not None else field.label == field.LABEL_REPEATED


def copy_fields(src, dst, skip: str, skip_also: str = "") -> None:
    for field, value in src.ListFields():
        if field.name in (skip, skip_also):
            continue
        if is_repeated(field):
            getattr(dst, field.name).extend(value)
        elif field.message_type is not None:
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)


def light_copy(model: onnx.ModelProto, convert=None) -> onnx.ModelProto:
    """The model without the data of its large tensors: shape inference needs only their dims, and copying
    or serializing weights is what made it slow and memory-hungry. `convert(tensor) -> tensor` replaces the
    default dropping of data (initializers and Constant-node tensors)."""
    _light_tensor = convert or dataless_tensor
    light = onnx.ModelProto()
    copy_fields(model, light, skip="graph")
    copy_fields(model.graph, light.graph, skip="initializer", skip_also="node")
    light.graph.initializer.extend(_light_tensor(t) for t in model.graph.initializer)
    for node in model.graph.node:
        new = light.graph.node.add()
        if node.op_type == "Constant":
            copy_fields(node, new, skip="attribute")
            for attr in node.attribute:
                a = new.attribute.add()
                if attr.type == onnx.AttributeProto.TENSOR:
                    a.name, a.type = attr.name, attr.type
                    a.t.CopyFrom(_light_tensor(attr.t))
                else:
                    a.CopyFrom(attr)
        else:
            new.CopyFrom(node)
    return light


def dataless_tensor(tensor: onnx.TensorProto) -> onnx.TensorProto:
    if math.prod(int(d) for d in tensor.dims) <= SMALL_TENSOR:
        return tensor
    light = onnx.TensorProto()
    light.name, light.data_type = tensor.name, tensor.data_type
    light.dims.extend(tensor.dims)
    return light
