"""Exact float rewrites that make a graph quantize better: zero Pad folded into the Conv after it,
and a zero bias for Conv/Gemm that have none (so bias correction has somewhere to go).

A separate Pad between two quantized Convs stays in float in onnxruntime's int8 graph (DequantizeLinear ->
Pad -> QuantizeLinear around it); TF-style "same" padding exports (EfficientNet) have one per block.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.passes.rewrite.util import const


def fold_pads(graph: gs.Graph) -> list[str]:
    """Pad(constant 0 on spatial axes only) -> Conv becomes Conv with bigger pads; returns the folded Pads' names."""
    folded = []
    for pad in [n for n in graph.nodes if n.op == "Pad"]:
        out = pad.outputs[0]
        consumers = out.outputs
        if len(consumers) != 1 or consumers[0].op != "Conv" or consumers[0].inputs[0] is not out or any(out is o for o in graph.outputs):
            continue
        conv = consumers[0]
        if pad.attrs.get("mode", "constant") != "constant" or len(pad.inputs) < 2:
            continue
        pads = const(pad.inputs[1])
        value = const(pad.inputs[2]) if len(pad.inputs) > 2 and pad.inputs[2].name else np.zeros(1)
        axes = const(pad.inputs[3]) if len(pad.inputs) > 3 and pad.inputs[3].name else None
        if pads is None or value is None or np.any(np.asarray(value) != 0) or axes is not None:
            continue
        pads = np.asarray(pads).astype(int).reshape(-1)
        rank = len(pads) // 2
        begins, ends = pads[:rank], pads[rank:]
        if rank < 3 or np.any(begins[:2] != 0) or np.any(ends[:2] != 0) or np.any(pads < 0):
            continue
        if conv.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
            continue
        spatial = rank - 2
        old = list(conv.attrs.get("pads", [0] * (2 * spatial)))
        conv.attrs["pads"] = [int(old[i] + begins[2 + i]) for i in range(spatial)] + [int(old[spatial + i] + ends[2 + i]) for i in range(spatial)]
        conv.inputs[0] = pad.inputs[0]
        pad.outputs.clear()
        folded.append(pad.name)
    graph.cleanup()
    return folded


def add_zero_biases(graph: gs.Graph) -> list[str]:
    """Give Conv (and Gemm with C absent) an explicit zero bias; exact, and bias correction needs one."""
    added = []
    for node in graph.nodes:
        if node.op == "Conv" and len(node.inputs) == 2 and isinstance(node.inputs[1], gs.Constant):
            out_ch = node.inputs[1].values.shape[0]
            node.inputs.append(gs.Constant(f"{node.name}_zero_bias", np.zeros(out_ch, dtype=node.inputs[1].values.dtype)))
            added.append(node.name)
    return added
