"""A Concat that puts the elements of a 1-D tensor S back together in order is S itself (or one Slice of S for
a contiguous part of it): Concat(Unsqueeze(Gather(S, 0)), Unsqueeze(Gather(S, 1))) with S of length 2 is S.

Exporters write this for `x.reshape(y.shape)` (Shape -> Gather each dim -> Unsqueeze -> Concat). It is exact
for any input: the pieces are S's own elements, whatever their values, so no shape needs to be known
except S's length (for negative indices and for "all of S")."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..engine import Rule
from ..util import NoMatch, axes_of, bypass, const, only_consumer, producer, replace_check, static_dims
from .slice_noop import slice_params


def _length(s) -> int | None:
    dims = static_dims(s)
    return dims[0] if dims is not None and len(dims) == 1 and dims[0] is not None else None


def _elements(piece, ctx) -> tuple[object, list[int]] | None:
    """(S, indices of S this piece holds, in order) when the piece reads elements of a 1-D S, else None."""
    unsqueeze = producer(piece, "Unsqueeze")
    if unsqueeze is not None:
        axes = axes_of(unsqueeze, 1, ctx)
        if axes not in ([0], [-1]):
            return None
        gather = producer(unsqueeze.inputs[0], "Gather")
        index = const(gather.inputs[1]) if gather is not None else None
        if index is None or index.ndim != 0:
            return None
        return _from(gather.inputs[0], [int(index)], gather)
    node = producer(piece, ("Gather", "Slice"))
    if node is None:
        return None
    if node.op == "Gather":
        index = const(node.inputs[1])
        if index is None or index.ndim != 1:
            return None
        return _from(node.inputs[0], [int(i) for i in index], node)
    return _slice_elements(node)


def _from(s, indices: list[int], node) -> tuple[object, list[int]] | None:
    n = _length(s)
    if n is None or int(node.attrs.get("axis", 0)) not in (0, -1):
        return None
    if any(not -n <= i < n for i in indices):
        return None  # out of range fails at run time: leave it
    return s, [i % n for i in indices]


def _slice_elements(node) -> tuple[object, list[int]] | None:
    if "starts" in node.attrs or len(node.inputs) < 3:
        return None
    try:
        starts, ends, axes, steps = slice_params(node)
    except NoMatch:
        return None
    n = _length(node.inputs[0])
    if n is None or starts is None or ends is None or len(starts) != 1 or axes not in (None, [0], [-1]) or steps not in (None, [1]):
        return None
    start, stop, _ = slice(starts[0], ends[0]).indices(n)
    return node.inputs[0], list(range(start, max(start, stop)))


def _runs(pieces) -> list[tuple[int, int, object, list[int]]]:
    """Maximal runs [first, last) of consecutive pieces reading consecutive elements of one S."""
    runs, i = [], 0
    while i < len(pieces):
        if pieces[i] is None or not pieces[i][1]:
            i += 1
            continue
        s, idx = pieces[i][0], list(pieces[i][1])
        j = i + 1
        while j < len(pieces) and pieces[j] is not None and pieces[j][0] is s and pieces[j][1] \
                and pieces[j][1][0] == idx[-1] + 1 and pieces[j][1] == list(range(pieces[j][1][0], pieces[j][1][-1] + 1)):
            idx += pieces[j][1]
            j += 1
        if idx == list(range(idx[0], idx[-1] + 1)) and (j - i >= 2 or len(idx) == _length(s)):
            runs.append((i, j, s, idx))
        i = j
    return runs


class ConcatReassemble(Rule, name="concat_reassemble", anchors=("Concat",)):
    def check(self, node, ctx):
        if int(node.attrs.get("axis", 0)) not in (0, -1):
            return "not a Concat of 1-D pieces on axis 0"
        runs = _runs([_elements(t, ctx) for t in node.inputs])
        whole = bool(runs) and runs[0][:2] == (0, len(node.inputs)) and len(runs[0][3]) == _length(runs[0][2])
        if not whole:  # a partial run adds a Slice: only worth it when the pieces it replaces die
            runs = [r for r in runs if len(r[3]) == _length(r[2])
                    or all(only_consumer(t, ctx) for t in node.inputs[r[0]:r[1]])]
        if not runs:
            return "no run of pieces reading consecutive elements of one 1-D tensor"
        if whole:
            reason = replace_check(node.outputs[0], runs[0][2], ctx)
            if reason:
                return reason
        elif ctx.opset < 10:
            return "a partial run needs Slice with inputs (opset >= 10)"
        return {"runs": runs, "whole": whole}

    def rewrite(self, node, match, ctx):
        if match["whole"]:
            bypass(node, match["runs"][0][2], ctx)
            return
        pieces = list(node.inputs)
        for first, last, s, idx in reversed(match["runs"]):
            pieces[first:last] = [self._slice(s, idx[0], idx[-1] + 1, node, ctx)]
        node.inputs.clear()
        node.inputs.extend(pieces)

    @staticmethod
    def _slice(s, start: int, stop: int, node, ctx):
        if start == 0 and stop == _length(s):
            return s
        base = node.name or "concat"
        out = gs.Variable(ctx.fresh(f"{base}_part"), dtype=s.dtype, shape=[stop - start])
        bounds = [gs.Constant(ctx.fresh(f"{base}_{k}"), np.array([v], dtype=np.int64)) for k, v in (("start", start), ("stop", stop))]
        ctx.graph.nodes.append(gs.Node("Slice", name=ctx.fresh(f"{base}_slice"), inputs=[s, *bounds], outputs=[out]))
        return out
