"""Transpose -> Transpose composes into one (removed when the composition is the identity); a Transpose
with the identity perm is removed; a Transpose that keeps the order of every axis not known to be 1 moves
no data and becomes a Reshape when its output shape can be written as a constant."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..engine import RemoveNode, Rule
from ..util import bypass, produced_by, rank, replace_check, static_dims


def perm_of(node) -> list[int] | None:
    if "perm" in node.attrs:
        return [int(p) for p in node.attrs["perm"]]
    r = rank(node.inputs[0])
    return None if r is None else list(range(r))[::-1]  # no perm: reverse the axes


class TransposePair(Rule, name="transpose_pair", anchors=("Transpose",)):
    def check(self, node, ctx):
        first = produced_by(node.inputs[0], "Transpose")
        p1, p2 = perm_of(first), perm_of(node)
        if p1 is None or p2 is None or len(p1) != len(p2):
            return "a perm is unknown"
        composed = [p1[j] for j in p2]  # out[j] = x[p1[p2[j]]]
        # an identity composition is removed, unless its output is a graph output that cannot be renamed:
        # then one identity Transpose stays in place of two
        bypassable = composed == list(range(len(composed))) and not replace_check(node.outputs[0], first.inputs[0], ctx)
        return {"src": first.inputs[0], "perm": composed, "bypass": bypassable}

    def rewrite(self, node, match, ctx):
        if match["bypass"]:
            bypass(node, match["src"], ctx)
            return
        node.inputs[0] = match["src"]
        node.attrs["perm"] = match["perm"]


class TransposeIdentity(RemoveNode, name="transpose_identity", anchors=("Transpose",)):
    def why_not(self, node, ctx):
        perm = perm_of(node)
        return "the perm moves axes" if perm is None or perm != list(range(len(perm))) else None


class TransposeAsReshape(Rule, name="transpose_as_reshape", anchors=("Transpose",)):
    def check(self, node, ctx):
        perm, dims = perm_of(node), static_dims(node.inputs[0])
        if perm is None or dims is None or len(perm) != len(dims) or perm == list(range(len(perm))):
            return "perm or input shape unknown (or identity)"
        moved = [p for p in perm if dims[p] != 1]
        if moved != sorted(moved):
            return "axes that may be larger than 1 change order"
        out = [dims[p] for p in perm]
        # a known size as it is; an unknown dim that stays in place copies the input's (0); else -1
        target = [d if d is not None and d > 0 else (0 if d is None and perm[j] == j else -1) for j, d in enumerate(out)]
        unknown = target.count(-1)
        if unknown > 1 or 0 in [d for d in out if d is not None]:
            return "more than one dynamic dim moves (or a zero-size dim): no constant target shape"
        if unknown == 1 and 0 in target:
            return "-1 next to a copied dynamic dim is ambiguous when that dim is 0"
        return {"shape": np.array(target, dtype=np.int64)}

    def rewrite(self, node, match, ctx):
        shape = gs.Constant(ctx.fresh(f"{node.name or 'transpose'}_as_reshape"), match["shape"])
        node.op = "Reshape"
        node.attrs.clear()
        node.inputs.append(shape)
