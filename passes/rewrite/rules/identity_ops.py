"""Ops that return their input unchanged for every input they accept: a Pad whose pads are all 0, a Split
with a single output (it must cover the whole axis), are removed."""
from __future__ import annotations

from ..engine import RemoveNode
from ..util import const


class PadNoop(RemoveNode, name="pad_noop", anchors=("Pad",)):
    def why_not(self, node, ctx):
        if "pads" in node.attrs:  # opset < 11
            pads = list(node.attrs["pads"])
        else:
            value = const(node.inputs[1]) if len(node.inputs) > 1 else None
            if value is None:
                return "the pads are computed at run time"
            pads = value.reshape(-1).tolist()
        return "a pad is not 0" if any(int(p) != 0 for p in pads) else None


class SplitSingle(RemoveNode, name="split_single", anchors=("Split",)):
    def why_not(self, node, ctx):
        return "more than one output" if len(node.outputs) != 1 else None
