"""Pad (constant mode, value 0, spatial axes only) -> Conv: the padding joins the Conv's pads attribute.
A Conv's own padding is zeros too, so the output is the same for any input size."""
from __future__ import annotations

import numpy as np

from ..engine import Rule
from ..util import const, only_consumer, produced_by


def _pad_amounts(pad, r, ctx) -> list[int] | str:
    """Pads as [begin_0.., end_0..] over all r axes, from the attribute (opset < 11) or the inputs."""
    if "pads" in pad.attrs:
        pads, value = [int(p) for p in pad.attrs["pads"]], float(pad.attrs.get("value", 0.0))
        axes = None
    else:
        p = const(pad.inputs[1]) if len(pad.inputs) > 1 else None
        if p is None:
            return "pads are computed at run time"
        pads = [int(v) for v in p.reshape(-1)]
        v = const(pad.inputs[2]) if len(pad.inputs) > 2 and pad.inputs[2].name else np.zeros(1)
        if v is None:
            return "the pad value is computed at run time"
        value = float(np.asarray(v).reshape(-1)[0]) if v.size else 0.0
        a = const(pad.inputs[3]) if len(pad.inputs) > 3 and pad.inputs[3].name else None
        if len(pad.inputs) > 3 and pad.inputs[3].name and a is None:
            return "the pad axes are computed at run time"
        axes = None if a is None else [int(x) % r for x in a.reshape(-1)]
    if value != 0.0:
        return "the pad value is not zero"
    if axes is not None:  # expand to every axis
        full = [0] * (2 * r)
        n = len(axes)
        for i, ax in enumerate(axes):
            full[ax], full[ax + r] = pads[i], pads[i + n]
        pads = full
    if len(pads) != 2 * r:
        return "pads do not match the input rank"
    return pads


class PadConv(Rule, name="pad_conv", anchors=("Conv",)):
    def check(self, node, ctx):
        pad = produced_by(node.inputs[0], "Pad")
        if pad.attrs.get("mode", "constant") not in ("constant", b"constant"):
            return "the pad mode is not constant"
        if not only_consumer(node.inputs[0], ctx):
            return "the padded tensor has other consumers"
        if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
            return "the Conv uses auto_pad"
        w = const(node.inputs[1])
        if w is None:
            return "the Conv weight rank is unknown"
        r = w.ndim
        pads = _pad_amounts(pad, r, ctx)
        if isinstance(pads, str):
            return pads
        if any(p < 0 for p in pads):
            return "negative pads crop"
        if pads[0] or pads[1] or pads[r] or pads[r + 1]:
            return "the Pad pads batch or channel axes"
        k = r - 2
        old = [int(p) for p in node.attrs.get("pads", [0] * (2 * k))]
        new = [old[i] + pads[2 + i] for i in range(k)] + [old[k + i] + pads[r + 2 + i] for i in range(k)]
        return {"pad": pad, "pads": new}

    def rewrite(self, node, match, ctx):
        pad = match["pad"]
        node.attrs["pads"] = match["pads"]
        node.inputs[0] = pad.inputs[0]
        pad.outputs.clear()
        pad.inputs.clear()
