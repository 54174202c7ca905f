"""Conv/ConvTranspose -> Add (or Sub) of a per-output-channel constant: the constant joins the bias."""
from __future__ import annotations

from ..engine import Rule
from ._conv import channel_vector, bias_of, const_operand, conv_producer, set_bias, take_output


class ConvAdd(Rule):
    name = "conv_add"
    anchors = ("Add", "Sub")

    def check(self, node, ctx):
        x, c = const_operand(node, commutative=node.op == "Add")
        if x is None:
            return "no constant operand (or constant first in a Sub)"
        conv = conv_producer(x, ctx)
        if isinstance(conv, str):
            return conv
        vec = channel_vector(c, conv, x)
        if isinstance(vec, str):
            return vec
        return {"conv": conv, "vec": vec if node.op == "Add" else -vec}

    def rewrite(self, node, match, ctx):
        conv = match["conv"]
        set_bias(conv, bias_of(conv) + match["vec"], "add", ctx)
        take_output(conv, node)
