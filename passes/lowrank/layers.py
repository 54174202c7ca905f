"""Which nodes can be split, seen uniformly as y = x W (+ bias) with W [in, out] (the transpose of
onnxslim/linear.py's W, as the factorization is written); and why the others cannot."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from onnxslim import linear

KINDS = {"MatMul": "matmul", "Gemm": "gemm", "Conv": "conv"}


@dataclass
class Layer:
    node: onnx.NodeProto
    kind: str                      # "matmul" | "gemm" | "conv"
    weight: np.ndarray             # W as [in, out], float64
    out_tensor: str                # the tensor whose features are the layer's output (pre-bias for MatMul)
    feature_axis: int              # axis of out_tensor holding the output features
    bias: np.ndarray | None        # the bias added to out_tensor's features (Conv B, Gemm beta*C), or of the Add after a MatMul
    bias_add: onnx.NodeProto | None = None   # the Add that carries a MatMul's bias
    kernel: np.ndarray | None = None         # Conv only: the original [Cout, Cin, kh, kw] kernel
    attrs: dict = field(default_factory=dict)
    level: int = 0                 # topological depth among layers: same level = fitted together

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def in_features(self) -> int:
        return self.weight.shape[0]

    @property
    def out_features(self) -> int:
        return self.weight.shape[1]

    @property
    def bias_in_output(self) -> bool:
        """Does out_tensor already include the bias (Conv, Gemm), so statistics must subtract it?"""
        return self.kind in ("conv", "gemm") and self.bias is not None


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _float_init(inits, name):
    tensor = inits.get(name)
    if tensor is None or tensor.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
        return None
    return numpy_helper.to_array(tensor).astype(np.float64)


def find_layers(model: onnx.ModelProto, ops: set[str], exclude: set[str]) -> tuple[list[Layer], list[dict]]:
    """Candidate layers in graph order, and {name, op, reason} for every node of the chosen kinds left out."""
    inits = {t.name: t for t in model.graph.initializer}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph_outputs = {o.name for o in model.graph.output}
    layers, skipped = [], []
    for node in model.graph.node:
        kind = KINDS.get(node.op_type)
        if kind is None or kind not in ops:
            continue
        if node.name in exclude:
            skipped.append({"name": node.name, "op": node.op_type, "reason": "excluded by the user"})
            continue
        layer_or_reason = _make_layer(node, kind, inits, consumers, graph_outputs)
        if isinstance(layer_or_reason, str):
            skipped.append({"name": node.name, "op": node.op_type, "reason": layer_or_reason})
        else:
            layers.append(layer_or_reason)
    _assign_levels(model, layers)
    return layers, skipped


def _make_layer(node, kind, inits, consumers, graph_outputs):
    attrs = _attrs(node)
    if kind == "matmul":
        w = _float_init(inits, node.input[1])
        if w is None:
            return "weight is not a constant float initializer"
        if w.ndim != 2:
            return f"weight has rank {w.ndim}; only 2-D weights are split"
        bias, bias_add = None, None
        users = consumers.get(node.output[0], [])
        if len(users) == 1 and users[0].op_type == "Add" and node.output[0] not in graph_outputs:
            add = users[0]
            other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
            b = _float_init(inits, other)
            if b is not None and b.size == w.shape[1] and b.shape[-1:] == (w.shape[1],):
                bias, bias_add = b.reshape(-1), add
        return Layer(node, kind, w, node.output[0], -1, bias, bias_add, attrs=attrs)
    if kind == "gemm":
        if attrs.get("transA", 0):
            return "Gemm with transA=1 is not split"
        w = _float_init(inits, node.input[1])
        if w is None:
            return "weight is not a constant float initializer"
        w = linear.matrix("Gemm", w, attrs).T
        bias = None
        if len(node.input) > 2 and node.input[2]:
            c = _float_init(inits, node.input[2])
            if c is None:
                return "bias C is not a constant initializer"
            if c.size not in (1, w.shape[1]):
                return f"bias C of shape {c.shape} is not per output feature"
            bias = linear.bias("Gemm", c, w.shape[1], attrs)
        return Layer(node, kind, w, node.output[0], -1, bias, attrs=attrs)
    # Conv
    kernel = _float_init(inits, node.input[1])
    if kernel is None:
        return "weight is not a constant float initializer"
    if kernel.ndim != 4:
        return f"only 2-D Conv is split (kernel rank {kernel.ndim})"
    if int(attrs.get("group", 1)) != 1:
        return f"grouped Conv (group={attrs.get('group')}) is not split"
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        return f"auto_pad={attrs['auto_pad']!r} is not supported; explicit pads only"
    bias = None
    if len(node.input) > 2 and node.input[2]:
        bias = _float_init(inits, node.input[2])
        if bias is None:
            return "bias is not a constant initializer"
    return Layer(node, kind, linear.matrix("Conv", kernel).T, node.output[0], 1, bias, kernel=kernel, attrs=attrs)


def _assign_levels(model, layers) -> None:
    """Level = 1 + the deepest layer upstream; nodes are in topological order as ONNX requires."""
    by_output = {layer.node.output[0]: layer for layer in layers}
    depth: dict[str, int] = {}
    for node in model.graph.node:
        d = max((depth.get(i, 0) for i in node.input if i), default=0)
        layer = by_output.get(node.output[0]) if node.output else None
        if layer is not None:
            d += 1
            layer.level = d
        for out in node.output:
            depth[out] = d
