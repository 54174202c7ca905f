"""BatchNormalization folded into the Conv/ConvTranspose before it."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs


def fold_batchnorm(graph: gs.Graph) -> int:
    """Conv -> BN with the Conv output used only by BN: W' = W * s, b' = (b - mean) * s + beta, s = gamma/sqrt(var+eps)."""
    folded = 0
    outputs = {id(t) for t in graph.outputs}
    for bn in list(graph.nodes):
        if bn.op != "BatchNormalization" or any(o.outputs or id(o) in outputs for o in bn.outputs[1:]):
            continue  # its running mean/var outputs are used
        if int(bn.attrs.get("training_mode", 0)):
            continue  # normalizes by the batch's own statistics, not the running ones: not a per-channel affine
        x = bn.inputs[0]
        conv = x.inputs[0] if len(x.inputs) == 1 else None
        if conv is None or conv.op not in ("Conv", "ConvTranspose") or len(x.outputs) != 1 or id(x) in outputs:
            continue
        params = bn.inputs[1:5]
        if not all(isinstance(p, gs.Constant) for p in params) or not isinstance(conv.inputs[1], gs.Constant):
            continue
        gamma, beta, mean, var = (p.values.astype(np.float64) for p in params)
        eps = float(bn.attrs.get("epsilon", 1e-5))
        scale = gamma / np.sqrt(var + eps)
        w = conv.inputs[1].values.astype(np.float64)
        if conv.op == "Conv":
            w = w * scale.reshape(-1, *([1] * (w.ndim - 1)))
        else:  # ConvTranspose weight is [Cin, Cout/g, ...]; only groups=1 is folded
            if int(conv.attrs.get("group", 1)) != 1:
                continue
            w = w * scale.reshape(1, -1, *([1] * (w.ndim - 2)))
        bias = conv.inputs[2].values.astype(np.float64) if len(conv.inputs) > 2 and isinstance(conv.inputs[2], gs.Constant) else np.zeros_like(mean)
        if len(conv.inputs) > 2 and not isinstance(conv.inputs[2], gs.Constant):
            continue
        bias = (bias - mean) * scale + beta
        dtype = conv.inputs[1].values.dtype
        conv.inputs[1] = gs.Constant(conv.inputs[1].name + "_bnfold", w.astype(dtype))
        b_const = gs.Constant((conv.name or "conv") + "_bias_bnfold", bias.astype(dtype))
        if len(conv.inputs) > 2:
            conv.inputs[2] = b_const
        else:
            conv.inputs.append(b_const)
        y = bn.outputs[0]
        conv.outputs = [y]
        bn.inputs.clear()
        bn.outputs.clear()
        folded += 1
    graph.cleanup()
    return folded
