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
evaluated first (shape_folding.py: only small tensors, only the common shape ops) and shape inference
rerun, so the MACs of the nodes behind them are known.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import onnx
from onnx import helper

from .graph import infer_shapes
from .light import light_copy, set_input_dims, value_dims
from .inputs import symbolic_shapes
from .ops import node_macs
from .ops.macs import attrs_of, elements
from .shape_folding import fold_small_constants

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
    shapes = inferred_shapes(model, input_shapes)
    params = _node_params(model)
    return [NodeCost(node.name or f"{node.op_type}_{i}", node.op_type, node_macs(node, shapes), params[i],
                     shapes.get(node.output[0]) if node.output else None) for i, node in enumerate(model.graph.node)]


def model_cost(model: onnx.ModelProto, input_shapes: dict | None = None) -> dict:
    """Totals for reports: {"macs", "params", "unknown_macs_nodes", "per_node"}.

    `macs` sums the nodes whose MACs are known; `unknown_macs_nodes` names the compute nodes whose shapes
    stayed unknown (their MACs are missing from the total). `per_node` lists the nodes with MACs, params or
    unknown MACs (plain data-movement nodes are left out), as JSON-ready dicts.
    """
    costs = node_costs(model, input_shapes)
    per_node = [{**asdict(c), "output_shape": list(c.output_shape) if c.output_shape is not None else None}
                for c in costs if c.macs is None or c.macs or c.params]
    return {
        "macs": sum(c.macs for c in costs if c.macs),
        "params": sum(c.params for c in costs),
        "unknown_macs_nodes": [c.name for c in costs if c.macs is None],
        "per_node": per_node,
    }


# -- shapes -------------------------------------------------------------------------------------------

def inferred_shapes(model: onnx.ModelProto, input_shapes: dict | None = None) -> dict[str, tuple | None]:
    """{tensor: shape} after shape inference on a weightless copy (and folding of small shape subgraphs);
    None for unknown dims."""
    resolved = {k: v for k, v in symbolic_shapes(model, input_shapes).items() if v is not None}
    skeleton = _skeleton(model, resolved)
    for _ in range(_MAX_ROUNDS):
        try:
            inferred = infer_shapes(skeleton)
        except Exception:
            # a model onnx cannot infer still has input and weight shapes: count what they give
            inferred = skeleton
        shapes = _shape_map(inferred)
        if not fold_small_constants(skeleton, shapes):
            break
    return shapes


def _skeleton(model: onnx.ModelProto, input_shapes: dict) -> onnx.ModelProto:
    """A copy without the data of large tensors (inference needs only their dims) and with concrete inputs."""
    skel = light_copy(model)
    skel.graph.ClearField("value_info")
    set_input_dims(skel, input_shapes)  # a symbolic dim: the MACs behind it are unknown
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
        attrs = attrs_of(node) if node.domain == "com.microsoft" else {}
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
        dims = value_dims(vi)
        if dims is None:
            shapes.setdefault(vi.name, None)
        else:
            shapes[vi.name] = tuple(dims)
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


# -- params -------------------------------------------------------------------------------------------

def _node_params(model: onnx.ModelProto) -> list[int]:
    """Per node (graph order): elements of constants first reaching a non-constant node there."""
    g = model.graph
    sizes: dict[str, int] = {}
    for t in g.initializer:
        sizes[t.name] = 0 if t.data_type == onnx.TensorProto.INT64 else elements(t.dims)
    for t in g.sparse_initializer:
        sizes[t.values.name] = 0 if t.values.data_type == onnx.TensorProto.INT64 else elements(t.dims)
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
    """Value_int(s), strings and int64 tensors are shapes and labels, not weights: 0."""
    kind = next((a for a in node.attribute if a.name in ("value", "sparse_value", "value_float", "value_floats")), None)
    if kind is None or (kind.name == "value" and kind.t.data_type == onnx.TensorProto.INT64):
        return 0
    return elements(_constant_attr_shape(node))
