"""Mutations of the repo's own models (issue 15): structured ones (dims, element types, attributes, external
data locations, sparse tensors, memory bombs, input shapes, options) and byte-level ones (flips, truncation,
insertion). A `Chooser` makes every random decision, so the same code runs under hypothesis (CI, fixed seed)
and under random.Random (benchmarks/fuzz_hour.py).

A mutation returns a `Case`: the files of the model's folder, the command-line options it adds, and a label
that says what was done (the report of a failure)."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

REPO = Path(__file__).resolve().parents[2]
MODELS = sorted((REPO / "models").rglob("*.onnx"))
# canary files the harness plants outside the model's folder; external-data mutations point at them
CWD_CANARY, PARENT_CANARY = "canary_cwd.bin", "canary_parent.bin"
COMMANDS = {"bare": [], "prune": ["--prune", "0.3"], "int8-dynamic": ["--quantize", "int8-dynamic"], "inspect": None}


class Chooser:
    """Random decisions; `RandomChooser` for the benchmark, `HypothesisChooser` in CI."""

    def choice(self, items):
        raise NotImplementedError

    def integer(self, low: int, high: int) -> int:
        raise NotImplementedError


class RandomChooser(Chooser):
    def __init__(self, rng: random.Random):
        self.rng = rng

    def choice(self, items):
        return self.rng.choice(list(items))

    def integer(self, low, high):
        return self.rng.randint(low, high)


class HypothesisChooser(Chooser):
    def __init__(self, data):
        from hypothesis import strategies as st
        self.data, self.st = data, st

    def choice(self, items):
        return self.data.draw(self.st.sampled_from(list(items)))

    def integer(self, low, high):
        return self.data.draw(self.st.integers(low, high))


@dataclass
class Case:
    base: str
    command: str
    label: str
    files: dict = field(default_factory=dict)  # name in the model folder -> bytes (in.onnx among them)
    symlinks: dict = field(default_factory=dict)  # name in the model folder -> target ("@parent/x", "@cwd/x")
    options: list = field(default_factory=list)

    def describe(self) -> str:
        return f"{Path(self.base).name} [{self.command}] {self.label} {' '.join(self.options)}".strip()


def draw_case(c: Chooser) -> Case:
    base = c.choice(MODELS)
    model = onnx.load(str(base))
    kind = c.choice(list(MUTATIONS))
    case = Case(str(base.relative_to(REPO)), c.choice(list(COMMANDS)), kind)
    MUTATIONS[kind](c, model, case)
    if "in.onnx" not in case.files:
        case.files["in.onnx"] = model.SerializeToString()
    return case


# -- structured mutations ------------------------------------------------------------------------------------

def _initializer(c, model):
    return c.choice(model.graph.initializer)


HUGE = (0, 1, 2, 3, 7, 2**31, 2**31 - 1, 2**32 + 1, 2**40, 2**62, 2**63 - 1, -1, -(2**31))


def mut_dims(c, model, case):
    t = _initializer(c, model)
    dims = list(t.dims)
    how = c.choice(["set", "drop", "add", "swap", "scale"])
    if how == "set" and dims:
        dims[c.integer(0, len(dims) - 1)] = c.choice(HUGE)
    elif how == "drop" and dims:
        dims.pop(c.integer(0, len(dims) - 1))
    elif how == "add":
        dims.insert(c.integer(0, len(dims)), c.choice(HUGE))
    elif how == "swap" and len(dims) > 1:
        dims = dims[::-1]
    else:
        dims = [d * 2 for d in dims]
    del t.dims[:]
    t.dims.extend(dims)
    case.label = f"dims {t.name} -> {dims}"


def mut_reshape(c, model, case):
    """A weight replaced by random data of another (consistent) shape: gets past the data checks to the
    shape and attribute rules and into the passes."""
    t = _initializer(c, model)
    dims = list(t.dims) or [1]
    axis = c.integer(0, len(dims) - 1)
    dims[axis] = c.choice([0, 1, max(1, dims[axis] - 1), dims[axis] + 1, dims[axis] * 3])
    if c.choice([False, True]):
        dims = dims + [1] if len(dims) < 5 else dims[:-1]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(t.data_type) if t.data_type in (1, 6, 7, 10, 11) else np.float32
    values = np.random.default_rng(c.integer(0, 2**31)).standard_normal(dims).astype(dtype)
    t.CopyFrom(numpy_helper.from_array(values, t.name))
    case.label = f"reshape {t.name} -> {dims}"


def mut_values(c, model, case):
    """A valid model with odd weights: NaN, Inf, zeros, huge, denormal (BatchNorm variances among them)."""
    t = _initializer(c, model)
    if t.data_type != onnx.TensorProto.FLOAT:
        case.label = "values (unchanged)"
        return
    values = numpy_helper.to_array(t).copy()
    special = c.choice([np.nan, np.inf, -np.inf, 0.0, -1.0, 3e38, 1e-45])
    if c.choice(["all", "one"]) == "all":
        values[...] = special
    elif values.size:
        values.reshape(-1)[c.integer(0, values.size - 1)] = special
    t.CopyFrom(numpy_helper.from_array(values, t.name))
    case.label = f"values {t.name} -> {special}"


def mut_none(c, model, case):
    case.label = "none"


def mut_dtype(c, model, case):
    t = _initializer(c, model)
    t.data_type = c.choice(list(range(0, 27)) + [99, 1000, -5])
    case.label = f"data_type {t.name} -> {t.data_type}"


def mut_attribute(c, model, case):
    nodes = [n for n in model.graph.node if n.attribute]
    node = c.choice(nodes)
    attr = c.choice(node.attribute)
    values = c.choice([[0], [0, 0], [-1, -1], [1], [1, 1, 1], [2**31, 2**31], [3], [1, 1, 1, 1, 1, 1], [7, 7, 7, 7]])
    if attr.type == onnx.AttributeProto.INTS:
        del attr.ints[:]
        attr.ints.extend(values)
    elif attr.type == onnx.AttributeProto.INT:
        attr.i = values[0] if len(values) == 1 else c.choice([0, -1, 3, 2**40])
    elif attr.type == onnx.AttributeProto.FLOAT:
        attr.f = c.choice([float("nan"), float("inf"), -1.0, 0.0, 1e30])
    else:
        attr.type = onnx.AttributeProto.INTS  # a type that does not match the attribute
    case.label = f"attribute {node.name}.{attr.name} -> {onnx.helper.get_attribute_value(attr)!r}"


def mut_input_shape(c, model, case):
    vi = model.graph.input[0]
    dims = vi.type.tensor_type.shape.dim
    how = c.choice(["value", "param", "drop", "option"])
    if how == "option":
        shape = [c.choice([1, 2, 1000000, 2**31, 2**63, 2**70, 0, -3]) for _ in range(c.integer(1, 5))]
        case.options += ["--input-shape", f"{vi.name}:{','.join(map(str, shape))}"]
    elif how == "drop" and len(dims):
        del dims[-1]
    elif len(dims):
        d = dims[c.integer(0, len(dims) - 1)]
        if how == "value":
            d.dim_value = c.choice([0, 1, 3, 2**31, 2**40])
        else:
            d.dim_param = "free"
    case.label = f"input shape ({how})"


def mut_option(c, model, case):
    case.options += c.choice([["--seed", "-1"], ["--seed", str(2**70)], ["--min-cosine", "nan"], ["--min-cosine", "2"],
                              ["--prune", "nan"], ["--prune", "1"], ["--threads", "0"], ["--round-to", "0"],
                              ["--tolerance", "inf"], ["--calib-size", "-1"], ["--input-shape", "input:"],
                              ["--exclude", "\x01nope"], ["--target-macs", "1e-9"]])
    case.label = "option"


def mut_bomb(c, model, case):
    """The graph output plus ReduceSum(ConstantOfShape(huge)) or ReduceSum(Expand(1, huge)): gigabytes if folded
    or run; `computed`: ConstantOfShape(Shape(input) * 4096), sized only by shape inference's data propagation."""
    shape = c.choice([[1, 1, 40000, 50000], [30000, 30000], [2**31, 2**31], [1, 2**20, 2**20]])
    out = model.graph.output[0].name
    producer = next(n for n in model.graph.node if out in n.output)
    producer.output[list(producer.output).index(out)] = "pre_bomb"
    model.graph.initializer.append(numpy_helper.from_array(np.array(shape, np.int64), "bomb_shape"))
    model.graph.initializer.append(numpy_helper.from_array(np.array([1.0], np.float32), "bomb_one"))
    how = c.choice(["cos", "expand", "computed"])
    if how == "computed":  # the shape computed at run time: the graph input's shape times 2**12 on every axis
        rank = len(model.graph.input[0].type.tensor_type.shape.dim)
        model.graph.initializer[-2].CopyFrom(numpy_helper.from_array(np.full(rank, 2**12, np.int64), "bomb_scale"))
        model.graph.node.extend([helper.make_node("Shape", [model.graph.input[0].name], ["bomb_in_shape"], name="bomb_in_shape"),
                                 helper.make_node("Mul", ["bomb_in_shape", "bomb_scale"], ["bomb_shape"], name="bomb_mul")])
        shape = f"{model.graph.input[0].name}.shape * 4096"
    if how in ("cos", "computed"):
        made = helper.make_node("ConstantOfShape", ["bomb_shape"], ["bomb"], name="bomb",
                                value=numpy_helper.from_array(np.array([1.0], np.float32)))
    else:
        made = helper.make_node("Expand", ["bomb_one", "bomb_shape"], ["bomb"], name="bomb")
    model.graph.node.extend([made, helper.make_node("ReduceSum", ["bomb"], ["bomb_sum"], name="bomb_sum", keepdims=0),
                             helper.make_node("Add", ["pre_bomb", "bomb_sum"], [out], name="bomb_add")])
    case.label = f"bomb {made.op_type} {shape}"


LOCATIONS = ("w.bin", "sub/w.bin", "../" + PARENT_CANARY, CWD_CANARY, "@absolute", "link.bin", "w.bin\0x", "", "/",
             "..", "sub/../../" + PARENT_CANARY)


def mut_external(c, model, case):
    """One tensor's data moved to external storage: into the folder, or at a location pointing out of it."""
    where = c.choice(["initializer", "sparse_initializer", "constant"])
    t = _initializer(c, model)
    location = c.choice(LOCATIONS)
    raw = numpy_helper.to_array(t).tobytes()
    if location == "link.bin":
        case.symlinks["link.bin"] = c.choice(["@parent/" + PARENT_CANARY, "@cwd/" + CWD_CANARY, "w.bin"])
    case.files["w.bin"] = raw
    case.files["sub/w.bin"] = raw
    offset = c.choice([0, 0, 0, -1, 2**62, len(raw) + 1])
    length = c.choice([len(raw), len(raw), None, -1, 2**63 - 1, len(raw) - 1])
    if where == "sparse_initializer":
        values = numpy_helper.from_array(numpy_helper.to_array(t).reshape(-1), t.name)
        idx = numpy_helper.from_array(np.arange(values.dims[0], dtype=np.int64) * c.choice([1, 1, 2, -1]), "idx_" + t.name)
        sparse = helper.make_sparse_tensor(values, idx, list(t.dims))
        _make_external(sparse.values, location, offset, length)
        model.graph.initializer.remove(t)
        model.graph.sparse_initializer.append(sparse)
    elif where == "constant":
        const = onnx.TensorProto()
        const.CopyFrom(t)
        model.graph.initializer.remove(t)
        _make_external(const, location, offset, length)
        model.graph.node.insert(0, helper.make_node("Constant", [], [t.name], name="const_" + t.name, value=const))
    else:
        _make_external(t, location, offset, length)
    case.label = f"external {where} {t.name} at {location!r} offset {offset} length {length}"


def _make_external(t, location, offset, length):
    t.ClearField("raw_data")
    for name in ("float_data", "int64_data", "int32_data", "double_data"):
        t.ClearField(name)
    t.data_location = onnx.TensorProto.EXTERNAL
    t.external_data.add(key="location", value=location)
    t.external_data.add(key="offset", value=str(offset))
    if length is not None:
        t.external_data.add(key="length", value=str(length))


# -- byte-level mutations ------------------------------------------------------------------------------------

def mut_bytes(c, model, case):
    data = bytearray(model.SerializeToString())
    how = c.choice(["flip", "truncate", "insert", "zero"])
    if how == "flip":
        for _ in range(c.integer(1, 16)):
            data[c.integer(0, len(data) - 1)] ^= 1 << c.integer(0, 7)
    elif how == "truncate":
        data = data[: c.integer(0, len(data) - 1)]
    elif how == "insert":
        at = c.integer(0, len(data))
        data[at:at] = bytes(c.integer(0, 255) for _ in range(c.integer(1, 8)))
    else:
        at = c.integer(0, len(data) - 1)
        data[at:at + 64] = bytes(min(64, len(data) - at))
    case.files["in.onnx"] = bytes(data)
    case.label = f"bytes {how}"


MUTATIONS = {"none": mut_none, "values": mut_values, "dims": mut_dims, "reshape": mut_reshape, "dtype": mut_dtype, "attribute": mut_attribute, "input_shape": mut_input_shape,
             "option": mut_option, "bomb": mut_bomb, "external": mut_external, "bytes": mut_bytes}
