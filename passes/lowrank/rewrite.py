"""Graph edits on onnx-graphsurgeon: one layer becomes two (MatMul->MatMul, MatMul->Gemm, Conv->Conv 1x1,
Conv kx1->Conv 1xk), or keeps its node with new weights.

The second node keeps the original output name, so nothing downstream changes; the bias moves to it. The
new nodes take the old node's place in the node list; weights nothing reads any more are not exported.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxslim import linear
from onnxslim.graph import to_graph, to_model

from .layers import Layer


class Editor:
    """Accumulates replacements on a graph of a model; `finish()` returns the rewritten model (the input
    model is not changed). Layers are found by their output tensor, so layers found on the original model
    edit a model whose earlier layers were already split."""

    def __init__(self, model: onnx.ModelProto):
        self.like = model
        self.graph = to_graph(model)
        self.tensors = self.graph.tensors()
        self._names = set(self.tensors) | {n.name for n in self.graph.nodes}

    def unique(self, base: str) -> str:
        name, i = base, 1
        while name in self._names:
            name, i = f"{base}_{i}", i + 1
        self._names.add(name)
        return name

    def constant(self, base: str, array: np.ndarray, dtype) -> gs.Constant:
        return gs.Constant(self.unique(base), np.ascontiguousarray(np.asarray(array).astype(dtype)))

    def split_matmul(self, layer: Layer, a: np.ndarray, b: np.ndarray, bias: np.ndarray | None, dtype) -> None:
        """x W (+ bias) -> (x A) B (+ bias). Gemm keeps its bias in a Gemm; a MatMul's Add gets the new bias."""
        node, base = self._node(layer), layer.node.name or layer.node.output[0]
        hidden = gs.Variable(self.unique(f"{base}/lowrank_hidden"))
        first = gs.Node("MatMul", self.unique(f"{base}/lowrank_0"), inputs=[node.inputs[0], self.constant(f"{base}/lowrank_A", a, dtype)],
                        outputs=[hidden])
        inputs = [hidden, self.constant(f"{base}/lowrank_B", b, dtype)]
        op = "MatMul"
        if layer.kind == "gemm" and bias is not None:
            op = "Gemm"
            inputs.append(self.constant(f"{base}/lowrank_C", bias, dtype))
        elif layer.bias_add is not None and bias is not None:
            self._set_add_bias(layer, f"{base}/lowrank_bias", bias, dtype)
        second = gs.Node(op, self.unique(f"{base}/lowrank_1"), inputs=inputs, outputs=[node.outputs[0]])
        self._replace(node, [first, second])

    def split_conv_channels(self, layer: Layer, a: np.ndarray, b: np.ndarray, bias: np.ndarray | None, dtype) -> None:
        """Conv k x k Cin->Cout  ->  Conv k x k Cin->r (same strides/pads) then Conv 1 x 1 r->Cout (+ bias)."""
        node, base = self._node(layer), layer.node.name or layer.node.output[0]
        cout, cin, kh, kw = layer.kernel.shape
        rank = a.shape[1]
        attrs = {k: v for k, v in layer.attrs.items() if k != "kernel_shape"}
        first = self._conv(base, "K1", node.inputs[0], a.T.reshape(rank, cin, kh, kw), dtype, dict(kernel_shape=[kh, kw], **attrs))
        self._replace(node, [first, self._second_conv(base, "K2", first, b.T.reshape(cout, rank, 1, 1), bias, dtype,
                                                      dict(kernel_shape=[1, 1]), node)])

    def split_conv_spatial(self, layer: Layer, vertical: np.ndarray, horizontal: np.ndarray, bias: np.ndarray | None, dtype) -> None:
        """Conv kh x kw -> Conv kh x 1 (vertical stride/pads/dilation) then Conv 1 x kw (horizontal ones)."""
        node, base = self._node(layer), layer.node.name or layer.node.output[0]
        kh, kw = layer.kernel.shape[2:]
        sh, sw = layer.attrs.get("strides", [1, 1])
        dh, dw = layer.attrs.get("dilations", [1, 1])
        pt, pl, pb, pr = layer.attrs.get("pads", [0, 0, 0, 0])
        first = self._conv(base, "V", node.inputs[0], vertical, dtype,
                           dict(kernel_shape=[kh, 1], strides=[sh, 1], pads=[pt, 0, pb, 0], dilations=[dh, 1]))
        self._replace(node, [first, self._second_conv(base, "H", first, horizontal, bias, dtype,
                                                      dict(kernel_shape=[1, kw], strides=[1, sw], pads=[0, pl, 0, pr], dilations=[1, dw]), node)])

    def replace_weights(self, layer: Layer, w: np.ndarray, bias: np.ndarray | None, dtype) -> None:
        """Same node, new weight W [in, out] (and bias): a full-rank correction of a layer left whole."""
        node, base = self._node(layer), layer.node.name or layer.node.output[0]
        op = layer.node.op_type
        node.inputs[1] = self.constant(f"{base}/corrected_W", linear.stored(op, w.T, node.inputs[1].shape, layer.attrs), dtype)
        if bias is not None and layer.kind in ("gemm", "conv") and len(node.inputs) > 2 and node.inputs[2].name:
            node.inputs[2] = self.constant(f"{base}/corrected_bias", linear.stored_bias(op, bias, layer.attrs), dtype)
        elif bias is not None and layer.bias_add is not None:
            self._set_add_bias(layer, f"{base}/corrected_bias", bias, dtype)

    def finish(self) -> onnx.ModelProto:
        return to_model(self.graph, like=self.like)

    def _node(self, layer: Layer) -> gs.Node:
        return self.tensors[layer.node.output[0]].inputs[0]

    def _conv(self, base, key, x, kernel, dtype, attrs) -> gs.Node:
        hidden = gs.Variable(self.unique(f"{base}/lowrank_hidden"))
        return gs.Node("Conv", self.unique(f"{base}/lowrank_0"), attrs=attrs,
                       inputs=[x, self.constant(f"{base}/lowrank_{key}", kernel, dtype)], outputs=[hidden])

    def _second_conv(self, base, key, first, kernel, bias, dtype, attrs, node) -> gs.Node:
        inputs = [first.outputs[0], self.constant(f"{base}/lowrank_{key}", kernel, dtype)]
        if bias is not None:
            inputs.append(self.constant(f"{base}/lowrank_bias", bias, dtype))
        return gs.Node("Conv", self.unique(f"{base}/lowrank_1"), attrs=attrs, inputs=inputs, outputs=[node.outputs[0]])

    def _set_add_bias(self, layer: Layer, base: str, bias: np.ndarray, dtype) -> None:
        add = self.tensors[layer.bias_add.output[0]].inputs[0]
        index = 1 if add.inputs[0].name == layer.node.output[0] else 0
        add.inputs[index] = self.constant(base, np.asarray(bias).reshape(add.inputs[index].shape), dtype)

    def _replace(self, node: gs.Node, nodes: list[gs.Node]) -> None:
        """`nodes` in `node`'s place; `node` is disconnected from its tensors."""
        at = self.graph.nodes.index(node)
        node.inputs.clear()
        node.outputs.clear()
        self.graph.nodes[at:at + 1] = nodes
