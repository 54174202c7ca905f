"""BatchNormalization folded into the Conv/ConvTranspose before it."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.passes.rewrite.engine import RewriteContext
from onnxslim.passes.rewrite.rules._conv import CONVS, bias_of, scale_weight, set_bias
from onnxslim.passes.rewrite.util import take_output


def fold_batchnorm(graph: gs.Graph) -> int:
    """Conv -> BN with the Conv output used only by BN: W' = W * s, b' = (b - mean) * s + beta, s = gamma/sqrt(var+eps)."""
    ctx = RewriteContext(graph, 0)
    folded = 0
    outputs = ctx.output_ids()
    for bn in list(graph.nodes):
        if bn.op != "BatchNormalization" or any(o.outputs or id(o) in outputs for o in bn.outputs[1:]):
            continue  # its running mean/var outputs are used
        if int(bn.attrs.get("training_mode", 0)):
            continue  # normalizes by the batch's own statistics, not the running ones: not a per-channel affine
        x = bn.inputs[0]
        conv = x.inputs[0] if len(x.inputs) == 1 else None
        if conv is None or conv.op not in CONVS or len(x.outputs) != 1 or id(x) in outputs:
            continue
        params = bn.inputs[1:5]
        if not all(isinstance(p, gs.Constant) for p in params) or not isinstance(conv.inputs[1], gs.Constant):
            continue
        if conv.op == "ConvTranspose" and int(conv.attrs.get("group", 1)) != 1:
            continue  # grouped ConvTranspose + BN: the rewrite rule convtranspose_bn's
        if len(conv.inputs) > 2 and not isinstance(conv.inputs[2], gs.Constant):
            continue
        gamma, beta, mean, var = (p.values.astype(np.float64) for p in params)
        scale = gamma / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
        bias = (bias_of(conv) - mean) * scale + beta
        scale_weight(conv, scale, "bnfold", ctx)
        set_bias(conv, bias, "bnfold", ctx)
        take_output(conv, bn)
        folded += 1
    graph.cleanup()
    return folded
