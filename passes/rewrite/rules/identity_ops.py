"""Ops that return their input unchanged for every input they accept: a Pad whose pads are all 0, a Split
with a single output (it must cover the whole axis), are removed."""
from __future__ import annotations

from ..engine import Rule
from ..util import bypass, const, replace_check


class PadNoop(Rule):
    name = "pad_noop"
    anchors = ("Pad",)

    def check(self, node, ctx):
        if "pads" in node.attrs:  # opset < 11
            pads = list(node.attrs["pads"])
        else:
            value = const(node.inputs[1]) if len(node.inputs) > 1 else None
            if value is None:
                return "the pads are computed at run time"
            pads = value.reshape(-1).tolist()
        if any(int(p) != 0 for p in pads):
            return "a pad is not 0"
        return replace_check(node.outputs[0], node.inputs[0], ctx) or {}

    def rewrite(self, node, match, ctx):
        bypass(node, node.inputs[0], ctx)


class SplitSingle(Rule):
    name = "split_single"
    anchors = ("Split",)

    def check(self, node, ctx):
        if len(node.outputs) != 1:
            return "more than one output"
        return replace_check(node.outputs[0], node.inputs[0], ctx) or {}

    def rewrite(self, node, match, ctx):
        bypass(node, node.inputs[0], ctx)
