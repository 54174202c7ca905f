"""Conv/ConvTranspose -> Mul (or Div) by a per-output-channel constant: the weight and the bias are scaled.
(x*W + b)*s = x*(W*s) + b*s up to float rounding; Div by s multiplies by 1/s."""
from __future__ import annotations

import numpy as np

from ..engine import Rule
from ._conv import bias_of, channel_vector, const_operand, conv_producer, scale_weight, set_bias, take_output


class ConvMul(Rule):
    name = "conv_mul"
    anchors = ("Mul", "Div")

    def check(self, node, ctx):
        x, c = const_operand(node, commutative=node.op == "Mul")
        if x is None:
            return "no constant operand (or constant dividend)"
        conv = conv_producer(x, ctx)
        if isinstance(conv, str):
            return conv
        vec = channel_vector(c, conv, x)
        if isinstance(vec, str):
            return vec
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
