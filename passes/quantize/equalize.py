"""Cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization and Bias
Correction"), data-free.

For Conv1 -> act -> Conv2 with act positively homogeneous (ReLU, or nothing), scaling output channel i of
Conv1 by 1/s_i and the matching input channel of Conv2 by s_i leaves the float function unchanged:
    relu(x / s) * s == relu(x)   for s > 0.
Choosing s_i = sqrt(r1_i / r2_i), with r1_i the range of Conv1's output channel i and r2_i the range of
Conv2's weights that read channel i, gives both the same range sqrt(r1_i * r2_i): per-tensor weight
quantization then wastes far fewer levels on small channels. Conv2 may be grouped or depthwise
(depthwise-separable pairs): channel i then lives in group i // (C / groups).

ReLU6 is not homogeneous (clip at 6 becomes clip at 6/s_i), so a Clip between the convs is only equalized
with `relu6_as_relu=True`, which replaces it by ReLU first, as the paper does for MobileNetV2; that is
not an exact rewrite and the report says so.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim import linear

HOMOGENEOUS = ("Relu",)


def _clip_bounds(node):
    lo = node.inputs[1].values if len(node.inputs) > 1 and isinstance(node.inputs[1], gs.Constant) else node.attrs.get("min")
    hi = node.inputs[2].values if len(node.inputs) > 2 and isinstance(node.inputs[2], gs.Constant) else node.attrs.get("max")
    return (None if lo is None else float(np.asarray(lo))), (None if hi is None else float(np.asarray(hi)))


def _single_consumer(tensor, graph_outputs):
    return len(tensor.outputs) == 1 and id(tensor) not in graph_outputs


def _conv_weights(node):
    if node.op != "Conv" or not isinstance(node.inputs[1], gs.Constant):
        return None
    if len(node.inputs) > 2 and not isinstance(node.inputs[2], gs.Constant):
        return None
    if any(len(t.outputs) != 1 for t in node.inputs[1:]):  # a shared weight would change another node too
        return None
    return node.inputs[1].values


def find_pairs(graph: gs.Graph, relu6_as_relu: bool = False):
    """(conv1, act or None, conv2, kind) for every equalizable chain; plus skipped chains with reasons."""
    pairs, skipped = [], []
    outputs = {id(t) for t in graph.outputs}
    for conv1 in graph.nodes:
        if _conv_weights(conv1) is None:  # any grouping: scaling an output channel only touches its own row
            continue
        t = conv1.outputs[0]
        if not _single_consumer(t, outputs):
            continue
        act, nxt = None, t.outputs[0]
        if nxt.op in HOMOGENEOUS or nxt.op == "Clip":
            act = nxt
            if act.op == "Clip":
                lo, hi = _clip_bounds(act)
                if lo != 0.0:
                    continue
                if hi is not None and not relu6_as_relu:
                    skipped.append({"pair": [conv1.name, act.name], "reason": "ReLU6/Clip is not scale-equivariant; equalizing it is not exact (enable relu6_as_relu)"})
                    continue
            if not _single_consumer(act.outputs[0], outputs):
                continue
            nxt = act.outputs[0].outputs[0]
        w2 = _conv_weights(nxt)
        if w2 is None or nxt.inputs[0] is not (act.outputs[0] if act else t):
            continue
        channels = conv1.inputs[1].values.shape[0]
        groups = int(nxt.attrs.get("group", 1))
        if w2.shape[1] * groups != channels:
            continue
        pairs.append((conv1, act, nxt))
    return pairs, skipped


def equalize(graph: gs.Graph, relu6_as_relu: bool = False, iterations: int = 3) -> dict:
    """Rescale every pair in place; returns a report (pairs, ranges before and after)."""
    pairs, skipped = find_pairs(graph, relu6_as_relu)
    replaced = 0
    for conv1, act, conv2 in pairs:
        if act is not None and act.op == "Clip":
            act.op = "Relu"
            while len(act.inputs) > 1:
                act.inputs.pop()
            act.attrs.clear()
            replaced += 1
    spread_before, spread_after = [], []
    for it in range(iterations):  # chains share convs (conv2 of one pair is conv1 of the next): sweep a few times
        for conv1, act, conv2 in pairs:
            w1 = conv1.inputs[1].values.astype(np.float64)
            w2 = conv2.inputs[1].values.astype(np.float64)
            channels = w1.shape[0]
            groups = int(conv2.attrs.get("group", 1))
            # conv2's weights by conv group: input channel i is (group i // per-group inputs, local index)
            blocks = w2.reshape(groups, w2.shape[0] // groups, w2.shape[1], -1)
            r1 = np.abs(linear.matrix("Conv", w1)).max(axis=1)
            r2 = np.abs(blocks).max(axis=(1, 3)).reshape(-1)
            if it == 0:
                spread_before.append(float(r1.max() / max(r1.min(), 1e-12)))
            ok = (r1 > 0) & (r2 > 0)
            s = np.ones(channels)
            s[ok] = np.sqrt(r1[ok] / r2[ok])
            w1 = w1 / s.reshape(-1, *([1] * (w1.ndim - 1)))
            w2 = (blocks * s.reshape(groups, 1, -1, 1)).reshape(w2.shape)
            conv1.inputs[1].values = w1.astype(conv1.inputs[1].values.dtype)
            conv2.inputs[1].values = w2.astype(conv2.inputs[1].values.dtype)
            if len(conv1.inputs) > 2:
                conv1.inputs[2].values = (conv1.inputs[2].values.astype(np.float64) / s).astype(conv1.inputs[2].values.dtype)
    for conv1, act, conv2 in pairs:
        r1 = np.abs(linear.matrix("Conv", conv1.inputs[1].values)).max(axis=1)
        spread_after.append(float(r1.max() / max(r1.min(), 1e-12)))
    graph.cleanup()
    return {
        "pairs": len(pairs),
        "relu6_replaced_by_relu": replaced,
        "exact": replaced == 0,
        "skipped": skipped[:20],
        "skipped_count": len(skipped),
        "median_channel_range_spread_before": float(np.median(spread_before)) if spread_before else None,
        "median_channel_range_spread_after": float(np.median(spread_after)) if spread_after else None,
    }
