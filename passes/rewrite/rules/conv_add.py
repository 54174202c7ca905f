"""Conv/ConvTranspose -> Add (or Sub) of a per-output-channel constant: the constant joins the bias."""
from __future__ import annotations

from ..engine import Rule
from ..util import take_output
from ._conv import bias_of, conv_channel_constant, set_bias


class ConvAdd(Rule, name="conv_add", anchors=("Add", "Sub")):
    def check(self, node, ctx):
        conv, vec = conv_channel_constant(node, node.op == "Add", ctx)
        return {"conv": conv, "vec": vec if node.op == "Add" else -vec}

    def rewrite(self, node, match, ctx):
        conv = match["conv"]
        set_bias(conv, bias_of(conv) + match["vec"], "add", ctx)
        take_output(conv, node)
