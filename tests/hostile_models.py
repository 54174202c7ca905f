"""Hostile and invalid variants of the repo's own models (issue 15), shared by test_hostile.py and the fuzzer.

Each builder takes a folder, writes `in.onnx` there (plus any external data or canary files it needs) and
returns the path."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
FOLDED = MODELS / "digits_resnet_folded.onnx"
BN_KEPT = MODELS / "digits_resnet.onnx"
CONV = "/layer1/conv1/Conv"  # a 32->32 3x3 Conv of the digits ResNet; weight onnx::Conv_84, bias onnx::Conv_85


def digits(bn: bool = False) -> onnx.ModelProto:
    return onnx.load(str(BN_KEPT if bn else FOLDED))


def node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def init(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def set_attr(n: onnx.NodeProto, name: str, value) -> None:
    for i, a in enumerate(n.attribute):
        if a.name == name:
            del n.attribute[i]
            break
    n.attribute.append(helper.make_attribute(name, value))


def save(model: onnx.ModelProto, folder: Path, name: str = "in.onnx") -> Path:
    path = Path(folder) / name
    path.write_bytes(model.SerializeToString())
    return path


# -- invalid attributes and tensors of the digits ResNet ---------------------------------------------------

def conv_attr(name, value):
    def build(folder):
        m = digits()
        set_attr(node(m, CONV), name, value)
        return save(m, folder)
    return build


def tensor_edit(tensor_name, *, dims=None, data_type=None, bn=False):
    def build(folder):
        m = digits(bn)
        t = init(m, tensor_name)
        if dims is not None:
            del t.dims[:]
            t.dims.extend(dims)
        if data_type is not None:
            t.data_type = data_type
        return save(m, folder)
    return build


def replace_init(tensor_name, array, bn=False):
    def build(folder):
        m = digits(bn)
        t = init(m, tensor_name)
        t.CopyFrom(numpy_helper.from_array(array, tensor_name))
        return save(m, folder)
    return build


def bn_param(index: int, values=None, short: bool = False):
    """The first BatchNormalization of the BN-kept ResNet with input `index` replaced."""
    def build(folder):
        m = digits(bn=True)
        bn = next(n for n in m.graph.node if n.op_type == "BatchNormalization")
        t = init(m, bn.input[index])
        arr = numpy_helper.to_array(t).copy()
        if short:
            arr = arr[:-1]
        if values is not None:
            arr[: len(values)] = values
        t.CopyFrom(numpy_helper.from_array(arr, t.name))
        return save(m, folder)
    return build


# -- small hand-built graphs -------------------------------------------------------------------------------

def _model(nodes, inputs, outputs, inits=(), opset=17, **kw):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=9, **kw)


def _vi(name, shape, elem=onnx.TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def constant_of_shape_bomb(folder):
    """x + ConstantOfShape([1,1,40000,50000]): 8 GB if folded."""
    shape = numpy_helper.from_array(np.array([1, 1, 40000, 50000], np.int64), "shape")
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["c"], name="cos",
                              value=numpy_helper.from_array(np.array([1.0], np.float32))),
             helper.make_node("Add", ["x", "c"], ["y"], name="add")]
    return save(_model(nodes, [_vi("x", [1, 1, 1, 1])], [_vi("y", [1, 1, 40000, 50000])], [shape]), folder)


def expand_bomb(folder):
    """x + Expand(scalar, [30000, 30000]): 3.6 GB if folded."""
    inits = [numpy_helper.from_array(np.array([2.0], np.float32), "one"),
             numpy_helper.from_array(np.array([30000, 30000], np.int64), "shape")]
    nodes = [helper.make_node("Expand", ["one", "shape"], ["c"], name="expand"),
             helper.make_node("Mul", ["x", "c"], ["y"], name="mul")]
    return save(_model(nodes, [_vi("x", [1, 1])], [_vi("y", [30000, 30000])], inits), folder)


def optional_input(folder):
    """An optional(tensor) graph input unwrapped by OptionalGetElement before a Relu."""
    opt = helper.make_value_info("x", helper.make_optional_type_proto(
        helper.make_tensor_type_proto(onnx.TensorProto.FLOAT, [1, 4])))
    nodes = [helper.make_node("OptionalGetElement", ["x"], ["t"], name="get"),
             helper.make_node("Relu", ["t"], ["y"], name="relu")]
    return save(_model(nodes, [opt], [_vi("y", [1, 4])], opset=18), folder)


# -- external data of every kind ---------------------------------------------------------------------------

EXTERNAL_KINDS = ("initializer", "sparse_initializer", "constant", "sparse_constant", "function", "subgraph")
C_VALUES = np.array([1.0, 2.0, 3.0, 4.0], np.float32)


def make_external(tensor: onnx.TensorProto, location: str, offset: int = 0, length: int | None = None) -> None:
    """Point `tensor` at external data (its inline data dropped)."""
    raw = numpy_helper.to_array(tensor).tobytes()
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.ClearField("int64_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    tensor.external_data.add(key="location", value=location)
    tensor.external_data.add(key="offset", value=str(offset))
    tensor.external_data.add(key="length", value=str(len(raw) if length is None else length))


def external_bytes(kind: str) -> bytes:
    """What the external file must hold for `kind`: the float values (sparse: the values of indices 0..3)."""
    return C_VALUES.tobytes()


def external_model(kind: str, location: str = "w.bin") -> onnx.ModelProto:
    """y = x + c, x [4], where c's data is external at `location`, held by a tensor of the given kind."""
    x, y = _vi("x", [4]), _vi("y", [4])
    dense = numpy_helper.from_array(C_VALUES, "c")
    add = helper.make_node("Add", ["x", "c"], ["y"], name="add")
    if kind == "initializer":
        make_external(dense, location)
        return _model([add], [x], [y], [dense])
    if kind in ("sparse_initializer", "sparse_constant"):
        values = numpy_helper.from_array(C_VALUES, "c")
        make_external(values, location)
        sparse = helper.make_sparse_tensor(values, numpy_helper.from_array(np.arange(4, dtype=np.int64), "c_idx"), [4])
        if kind == "sparse_initializer":
            g = helper.make_graph([add], "g", [x], [y])
            g.sparse_initializer.append(sparse)
            return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
        const = helper.make_node("Constant", [], ["c"], name="const", sparse_value=sparse)
        return _model([const, add], [x], [y])
    make_external(dense, location)
    const = helper.make_node("Constant", [], ["c"], name="const", value=dense)
    if kind == "constant":
        return _model([const, add], [x], [y])
    if kind == "function":
        body_const = helper.make_node("Constant", [], ["c"], value=dense)
        body_add = helper.make_node("Add", ["X", "c"], ["Y"])
        fn = helper.make_function("local", "AddC", ["X"], ["Y"], [body_const, body_add],
                                  [helper.make_opsetid("", 17)])
        call = helper.make_node("AddC", ["x"], ["y"], name="call", domain="local")
        return helper.make_model(
            helper.make_graph([call], "g", [x], [y]), functions=[fn], ir_version=9,
            opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    if kind == "subgraph":
        def branch(name):
            c = numpy_helper.from_array(C_VALUES, "c_" + name)
            make_external(c, location)
            return helper.make_graph([helper.make_node("Add", ["x", "c_" + name], ["o_" + name])], name, [],
                                     [_vi("o_" + name, [4])], [c])
        cond = numpy_helper.from_array(np.array(True), "cond")
        iff = helper.make_node("If", ["cond"], ["y"], name="if", then_branch=branch("then"), else_branch=branch("else"))
        return _model([iff], [x], [y], [cond])
    raise ValueError(kind)


def write_external(folder: Path, kind: str, location: str = "w.bin", data_in_folder: bool = True) -> Path:
    folder = Path(folder)
    if data_in_folder and "\0" not in location and not location.startswith(("/", "..")):
        target = folder / location
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(external_bytes(kind))
    return save(external_model(kind, location), folder)


REPO_MODELS = Path(__file__).resolve().parent.parent / "models"


def bomb_in_network(family: str, op: str, shape) -> onnx.ModelProto:
    """A shipped family model (dynamic batch; its Conv/MatMul chains fire the rewrite rules) whose output
    gets + ReduceSum(ConstantOfShape(shape)) or + ReduceSum(Expand(1, shape)): what the fuzzer's bomb
    mutation builds, where the shape search and the fold after the rules once ran the bomb."""
    model = onnx.load(str(REPO_MODELS / "families" / f"{family}.onnx"))
    out = model.graph.output[0].name
    producer = next(n for n in model.graph.node if out in n.output)
    producer.output[list(producer.output).index(out)] = "pre_bomb"
    model.graph.initializer.extend([numpy_helper.from_array(np.array(shape or [1], np.int64), "bomb_shape"),
                                    numpy_helper.from_array(np.array([1.0], np.float32), "bomb_one")])
    if op == "computed":  # ConstantOfShape(Shape(input) * 4096): sized only by shape inference's data propagation
        rank = len(model.graph.input[0].type.tensor_type.shape.dim)
        model.graph.initializer.append(numpy_helper.from_array(np.full(rank, 2**12, np.int64), "bomb_scale"))
        model.graph.node.extend([helper.make_node("Shape", [model.graph.input[0].name], ["bomb_in_shape"]),
                                 helper.make_node("Mul", ["bomb_in_shape", "bomb_scale"], ["bomb_shape_run"])])
        made = helper.make_node("ConstantOfShape", ["bomb_shape_run"], ["bomb"], name="bomb",
                                value=numpy_helper.from_array(np.array([1.0], np.float32)))
    elif op == "ConstantOfShape":
        made = helper.make_node(op, ["bomb_shape"], ["bomb"], name="bomb", value=numpy_helper.from_array(np.array([1.0], np.float32)))
    else:
        made = helper.make_node(op, ["bomb_one", "bomb_shape"], ["bomb"], name="bomb")
    model.graph.node.extend([made, helper.make_node("ReduceSum", ["bomb"], ["bomb_sum"], name="bomb_sum", keepdims=0),
                             helper.make_node("Add", ["pre_bomb", "bomb_sum"], [out], name="bomb_add")])
    return model


def input_dim(family: str, axis: int, value: int) -> onnx.ModelProto:
    """A shipped family model with one dim of its input set to `value` (the fuzzer's input-shape mutation)."""
    model = onnx.load(str(REPO_MODELS / "families" / f"{family}.onnx"))
    model.graph.input[0].type.tensor_type.shape.dim[axis].dim_value = value
    return model


def transformer_layernorm_scale(dims) -> callable:
    """The shipped transformer with its second block's first LayerNormalization scale replaced by zeros of
    `dims` (the fuzzer's reshape mutation)."""
    def build(folder):
        m = onnx.load(str(REPO_MODELS / "families" / "transformer.onnx"))
        t = init(m, "layers.1.ln1.weight")
        t.CopyFrom(numpy_helper.from_array(np.zeros(dims, np.float32), t.name))
        return save(m, folder)
    return build


def old_opset_reshape_bomb(folder):
    """Opset 13 (no shape-value propagation in onnx): a Reshape to Concat(Shape(h)[0], -1) sends the cleanup
    to fold the Shape subgraphs of a pinned probe with onnx-graphsurgeon, next to ReduceSum(Expand(1,
    [30000, 30000])) added to the output: 3.6 GB if that fold evaluates it."""
    inits = [numpy_helper.from_array(np.array([0], np.int64), "zero"), numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
             numpy_helper.from_array(np.array([30000, 30000], np.int64), "bomb_shape"),
             numpy_helper.from_array(np.array([1.0], np.float32), "one"), numpy_helper.from_array(np.ones((4, 4), np.float32), "w")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"), helper.make_node("Shape", ["h"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "zero"], ["n"], name="gather", axis=0),
             helper.make_node("Concat", ["n", "minus1"], ["target"], name="cat", axis=0),
             helper.make_node("Reshape", ["h", "target"], ["r"], name="reshape"),
             helper.make_node("Expand", ["one", "bomb_shape"], ["bomb"], name="bomb"),
             helper.make_node("ReduceSum", ["bomb"], ["bomb_sum"], name="bomb_sum", keepdims=0),
             helper.make_node("Add", ["r", "bomb_sum"], ["y"], name="add")]
    return save(_model(nodes, [_vi("x", ["N", 4])], [_vi("y", ["N", 4])], inits, opset=13), folder)
