"""ConvTranspose -> BatchNormalization (inference mode): the BN's per-channel affine goes into the weight and
bias. Cleanup already folds Conv/ConvTranspose(group=1)+BN; this rule covers grouped ConvTranspose too."""
from __future__ import annotations

import numpy as np

from ..engine import Rule
from ..util import const, take_output
from ._conv import bias_of, conv_producer, out_channels, scale_weight, set_bias


class ConvTransposeBN(Rule, name="convtranspose_bn", anchors=("BatchNormalization",)):
    def check(self, node, ctx):
        if int(node.attrs.get("training_mode", 0)):
            return "training mode normalizes by batch statistics"
        if any(o.outputs or id(o) in ctx.output_ids() for o in node.outputs[1:]):
            return "running statistics outputs are used"
        conv = conv_producer(node.inputs[0], ctx)
        if conv.op != "ConvTranspose":
            return "Conv+BN is cleanup's fold"
        params = [const(t) for t in node.inputs[1:5]]
        if any(p is None for p in params):
            return "BN parameters are not constant"
        if any(p.shape != (out_channels(conv),) for p in params):
            return "BN parameter length differs from the output channels"
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)
        scale = gamma / np.sqrt(var + float(node.attrs.get("epsilon", 1e-5)))
        if not np.all(np.isfinite(scale)):
            return "BN scale is not finite"
        return {"conv": conv, "scale": scale, "shift": beta - mean * scale}

    def rewrite(self, node, match, ctx):
        conv = match["conv"]
        bias = bias_of(conv) * match["scale"] + match["shift"]
        scale_weight(conv, match["scale"], "bn", ctx)
        set_bias(conv, bias, "bn", ctx)
        take_output(conv, node)
