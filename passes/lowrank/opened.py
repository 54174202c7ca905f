"""A model whose candidate layers read their weight (and bias) from graph inputs, so that trying a layer at
another rank is a feed, not a rewritten model and a new onnxruntime session.

A try feeds the layer's low-rank weight W' = A B (same shape as W; the same function as the split pair up
to float rounding). Used by the greedy allocation (greedy.py) and the sensitivity measurement
(sensitivity.py).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from onnxslim import linear
from onnxslim.runtime import weights_as_inputs

from .layers import Layer


class OpenWeights:
    """`model`: the opened copy; `set(name, w, bias)` -> the feeds of one layer; `base()` -> the original's."""

    def __init__(self, model: onnx.ModelProto, layers: list[Layer], outputs=()):
        """`outputs`: the graph outputs to keep (all when empty)."""
        self.layers = {layer.name: layer for layer in layers}
        self._inits = {t.name: t for t in model.graph.initializer}
        self.model = weights_as_inputs(model, self._open_slots(model, layers))
        if outputs:
            kept = [o for o in self.model.graph.output if o.name in set(outputs)]
            del self.model.graph.output[:]
            self.model.graph.output.extend(kept)

    def _open_slots(self, model: onnx.ModelProto, layers: list[Layer]) -> dict:
        """weights_as_inputs' slots for every layer's weight and bias (the MatMul's bias on its Add); also
        fills self.slots: layer name -> [(weight input, stored shape, dtype), (bias input, shape) or None]
        and self.sources: input name -> the initializer it replaces."""
        by_output = {layer.node.output[0]: layer for layer in layers}
        self.slots: dict[str, list] = {}
        self.sources: dict[str, str] = {}
        slots: dict[str, dict] = {}
        for layer in (by_output[n.output[0]] for n in model.graph.node if n.output and n.output[0] in by_output):
            node, w = layer.node, self._inits[layer.node.input[1]]
            w_name = f"lowrank_open/{len(self.slots)}/W"
            slots[node.output[0]] = {1: (w_name, w.data_type, w.dims)}
            self.sources[w_name] = w.name
            bias_slot = None
            if layer.kind in ("gemm", "conv") and layer.bias is not None:
                bias_slot = (f"lowrank_open/{len(self.slots)}/B", (layer.out_features,))
                slots[node.output[0]][2] = (bias_slot[0], w.data_type, bias_slot[1])
                self.sources[bias_slot[0]] = node.input[2]
            elif layer.bias_add is not None and layer.bias is not None:
                add = layer.bias_add
                index = 1 if add.input[0] == node.output[0] else 0
                b = self._inits[add.input[index]]
                bias_slot = (f"lowrank_open/{layer.name}/bias", tuple(b.dims))
                slots[add.output[0]] = {index: (bias_slot[0], b.data_type, b.dims)}
                self.sources[bias_slot[0]] = b.name
            self.slots[layer.name] = [(w_name, tuple(w.dims), numpy_helper.to_array(w).dtype), bias_slot]
        return slots

    @property
    def names(self) -> set[str]:
        """The opened graph inputs."""
        return set(self.sources)

    def inputs_of(self, name: str) -> list[str]:
        """The graph inputs layer `name` reads its arrays from."""
        (w_name, _, _), bias_slot = self.slots[name]
        return [w_name] + ([bias_slot[0]] if bias_slot is not None else [])

    def base(self) -> dict[str, np.ndarray]:
        """Feeds of every opened input with the original model's arrays as stored (a Gemm bias stored in
        another shape than [out], e.g. a scalar C, is fed as set() writes it)."""
        out = {}
        for name, layer in self.layers.items():
            for key, value in self.set(name, layer.weight, layer.bias).items():
                raw = numpy_helper.to_array(self._inits[self.sources[key]])
                out[key] = raw if raw.shape == value.shape and raw.dtype == value.dtype else value
        return out

    def set(self, name: str, w: np.ndarray, bias: np.ndarray | None) -> dict:
        """Stored arrays for layer `name` with effective weight w [in, out] and bias [out]."""
        layer = self.layers[name]
        (w_name, w_shape, dtype), bias_slot = self.slots[name]
        out = {w_name: linear.stored(layer.node.op_type, w.T, w_shape, layer.attrs).astype(dtype)}
        if bias_slot is not None:
            b_name, b_shape = bias_slot
            b = bias if bias is not None else layer.bias
            out[b_name] = linear.stored_bias(layer.node.op_type, b, layer.attrs).reshape(b_shape).astype(dtype)
        return out
