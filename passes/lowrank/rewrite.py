"""Graph edits: one layer becomes two (MatMul->MatMul, MatMul->Gemm, Conv->Conv 1x1, Conv kx1->Conv 1xk).

The second node keeps the original output name, so nothing downstream changes; the bias moves to it.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .layers import Layer


class Editor:
    """Accumulates replacements on a model copy; `finish()` returns the rewritten model."""

    def __init__(self, model: onnx.ModelProto):
        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        self._names = {t.name for t in self.model.graph.initializer}
        self._names |= {o for n in self.model.graph.node for o in n.output}
        self._names |= {i.name for i in self.model.graph.input}
        self._replace: dict[str, list] = {}        # original node output -> new nodes
        self._new_inits: list = []
        self._add_inputs: dict[str, tuple] = {}    # bias Add output -> (old const name, new const name)
        self._maybe_unused: set[str] = set()

    def unique(self, base: str) -> str:
        name, i = base, 1
        while name in self._names:
            name, i = f"{base}_{i}", i + 1
        self._names.add(name)
        return name

    def constant(self, base: str, array: np.ndarray, dtype) -> str:
        name = self.unique(base)
        self._new_inits.append(numpy_helper.from_array(np.asarray(array).astype(dtype), name))
        return name

    def split_matmul(self, layer: Layer, a: np.ndarray, b: np.ndarray, bias: np.ndarray | None, dtype) -> None:
        """x W (+ bias) -> (x A) B (+ bias). Gemm keeps its bias in a Gemm; a MatMul's Add gets the new bias."""
        node, base = layer.node, layer.node.name or layer.node.output[0]
        hidden = self.unique(f"{base}/lowrank_hidden")
        first = helper.make_node("MatMul", [node.input[0], self.constant(f"{base}/lowrank_A", a, dtype)], [hidden],
                                 name=self.unique(f"{base}/lowrank_0"))
        b_name = self.constant(f"{base}/lowrank_B", b, dtype)
        if layer.kind == "gemm" and bias is not None:
            c_name = self.constant(f"{base}/lowrank_C", bias, dtype)
            second = helper.make_node("Gemm", [hidden, b_name, c_name], [node.output[0]], name=self.unique(f"{base}/lowrank_1"))
        else:
            second = helper.make_node("MatMul", [hidden, b_name], [node.output[0]], name=self.unique(f"{base}/lowrank_1"))
            if layer.bias_add is not None and bias is not None:
                add = layer.bias_add
                old = add.input[1] if add.input[0] == node.output[0] else add.input[0]
                shape = self._init_shape(old)
                new = self.constant(f"{base}/lowrank_bias", np.asarray(bias).reshape(shape), dtype)
                self._add_inputs[add.output[0]] = (old, new)
                self._maybe_unused.add(old)
        self._replace_node(layer, [first, second])

    def split_conv_channels(self, layer: Layer, a: np.ndarray, b: np.ndarray, bias: np.ndarray | None, dtype) -> None:
        """Conv k x k Cin->Cout  ->  Conv k x k Cin->r (same strides/pads) then Conv 1 x 1 r->Cout (+ bias)."""
        node, base = layer.node, layer.node.name or layer.node.output[0]
        cout, cin, kh, kw = layer.kernel.shape
        rank = a.shape[1]
        k1 = a.T.reshape(rank, cin, kh, kw)
        k2 = b.T.reshape(cout, rank, 1, 1)
        hidden = self.unique(f"{base}/lowrank_hidden")
        attrs = {k: v for k, v in layer.attrs.items() if k != "kernel_shape"}
        first = helper.make_node("Conv", [node.input[0], self.constant(f"{base}/lowrank_K1", k1, dtype)], [hidden],
                                 name=self.unique(f"{base}/lowrank_0"), kernel_shape=[kh, kw], **attrs)
        inputs = [hidden, self.constant(f"{base}/lowrank_K2", k2, dtype)]
        if bias is not None:
            inputs.append(self.constant(f"{base}/lowrank_bias", bias, dtype))
        second = helper.make_node("Conv", inputs, [node.output[0]], name=self.unique(f"{base}/lowrank_1"), kernel_shape=[1, 1])
        self._replace_node(layer, [first, second])

    def split_conv_spatial(self, layer: Layer, vertical: np.ndarray, horizontal: np.ndarray, bias: np.ndarray | None, dtype) -> None:
        """Conv kh x kw -> Conv kh x 1 (vertical stride/pads/dilation) then Conv 1 x kw (horizontal ones)."""
        node, base = layer.node, layer.node.name or layer.node.output[0]
        kh, kw = layer.kernel.shape[2:]
        sh, sw = layer.attrs.get("strides", [1, 1])
        dh, dw = layer.attrs.get("dilations", [1, 1])
        pt, pl, pb, pr = layer.attrs.get("pads", [0, 0, 0, 0])
        hidden = self.unique(f"{base}/lowrank_hidden")
        first = helper.make_node("Conv", [node.input[0], self.constant(f"{base}/lowrank_V", vertical, dtype)], [hidden],
                                 name=self.unique(f"{base}/lowrank_0"), kernel_shape=[kh, 1], strides=[sh, 1],
                                 pads=[pt, 0, pb, 0], dilations=[dh, 1])
        inputs = [hidden, self.constant(f"{base}/lowrank_H", horizontal, dtype)]
        if bias is not None:
            inputs.append(self.constant(f"{base}/lowrank_bias", bias, dtype))
        second = helper.make_node("Conv", inputs, [node.output[0]], name=self.unique(f"{base}/lowrank_1"),
                                  kernel_shape=[1, kw], strides=[1, sw], pads=[0, pl, 0, pr], dilations=[1, dw])
        self._replace_node(layer, [first, second])

    def replace_weights(self, layer: Layer, w: np.ndarray, bias: np.ndarray | None, dtype) -> None:
        """Same node, new weight W [in, out] (and bias): a full-rank correction of a layer left whole."""
        node, base = layer.node, layer.node.name or layer.node.output[0]
        new = onnx.NodeProto.FromString(node.SerializeToString())
        if layer.kind == "matmul":
            stored = w.reshape(self._init_shape(node.input[1]))
        elif layer.kind == "gemm":
            stored = w / float(layer.attrs.get("alpha", 1.0))
            stored = stored.T if layer.attrs.get("transB", 0) else stored
        else:
            stored = w.T.reshape(layer.kernel.shape)
        new.input[1] = self.constant(f"{base}/corrected_W", stored, dtype)
        if bias is not None and layer.kind in ("gemm", "conv") and len(new.input) > 2 and new.input[2]:
            beta = float(layer.attrs.get("beta", 1.0)) if layer.kind == "gemm" else 1.0
            new.input[2] = self.constant(f"{base}/corrected_bias", np.asarray(bias) / beta, dtype)
        elif bias is not None and layer.bias_add is not None:
            add = layer.bias_add
            old = add.input[1] if add.input[0] == node.output[0] else add.input[0]
            new_b = self.constant(f"{base}/corrected_bias", np.asarray(bias).reshape(self._init_shape(old)), dtype)
            self._add_inputs[add.output[0]] = (old, new_b)
            self._maybe_unused.add(old)
        self._replace_node(layer, [new])

    def _init_shape(self, name: str) -> tuple:
        for t in self.model.graph.initializer:
            if t.name == name:
                return tuple(t.dims)
        raise KeyError(name)

    def _replace_node(self, layer: Layer, nodes: list) -> None:
        self._replace[layer.node.output[0]] = nodes
        self._maybe_unused.update(layer.node.input[1:])

    def finish(self) -> onnx.ModelProto:
        graph = self.model.graph
        nodes = []
        for node in graph.node:
            key = node.output[0] if node.output else None
            if key in self._replace:
                nodes.extend(self._replace[key])
                continue
            if key in self._add_inputs:
                old, new = self._add_inputs[key]
                node = onnx.NodeProto.FromString(node.SerializeToString())
                for i, name in enumerate(node.input):
                    if name == old:
                        node.input[i] = new
            nodes.append(node)
        del graph.node[:]
        graph.node.extend(nodes)
        graph.initializer.extend(self._new_inits)
        _drop_unused_initializers(self.model, self._maybe_unused)
        return self.model


def _drop_unused_initializers(model: onnx.ModelProto, candidates: set[str]) -> None:
    """Remove the replaced weights nothing reads any more (and only those)."""
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    for node in model.graph.node:  # subgraphs may read outer-scope weights
        for attr in node.attribute:
            for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                used |= {i for n in g.node for i in n.input}
    dropped = {t.name for t in model.graph.initializer if t.name in candidates and t.name not in used}
    if dropped:
        keep = [t for t in model.graph.initializer if t.name not in dropped]
        del model.graph.initializer[:]
        model.graph.initializer.extend(keep)
        # older exporters list weights as graph inputs too; only those entries go with their weights
        inputs = [i for i in model.graph.input if i.name not in dropped]
        del model.graph.input[:]
        model.graph.input.extend(inputs)
