"""Conv/ConvTranspose -> Mul (or Div) by a per-output-channel constant: the weight and the bias are scaled.
(x*W + b)*s = x*(W*s) + b*s up to float rounding; Div by s multiplies by 1/s."""
from __future__ import annotations

import numpy as np

from ..engine import Rule
from ..util import take_output
from ._conv import bias_of, conv_channel_constant, scale_weight, set_bias


class ConvMul(Rule, name="conv_mul", anchors=("Mul", "Div")):
    def check(self, node, ctx):
        conv, vec = conv_channel_constant(node, node.op == "Mul", ctx)
        if node.op == "Div":
            if np.any(vec == 0):
                return "division by zero"
            vec = 1.0 / vec
        return {"conv": conv, "scale": vec}

    def rewrite(self, node, match, ctx):
        conv, scale = match["conv"], match["scale"]
        bias = bias_of(conv) * scale
        scale_weight(conv, scale, "mul", ctx)
        set_bias(conv, bias, "mul", ctx)
        take_output(conv, node)
