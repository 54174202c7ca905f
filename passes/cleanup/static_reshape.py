"""Run-time computed Reshape shapes made constant (channel pruning rewrites constant shapes)."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxslim.graph import infer_shapes, to_graph, to_model
from onnxslim.light import light_copy, value_dims
from onnxslim.shape_folding import fold_small_constants


def _concrete_shapes(model: onnx.ModelProto, sizes: list[int], need: tuple[str, ...] = ()) -> dict[str, tuple]:
    """Shapes inferred with every dynamic input dim set to a concrete size (sizes taken in turn).

    onnx propagates shape *values* (Shape -> Gather -> Concat -> Reshape) only from opset 15 on; when a
    tensor in `need` is still unknown, the Shape-derived subgraphs of the pinned probe are folded instead."""
    # shapes need no weights; folds below that would read a dropped large tensor fail and are skipped
    probe = light_copy(model)
    by_param: dict[str, int] = {}  # inputs that share a named dim (batch, sequence) must get one size
    for vi in probe.graph.input:
        for d in vi.type.tensor_type.shape.dim:
            if not d.HasField("dim_value") or d.dim_value <= 0:
                key = d.dim_param or f"anon{len(by_param)}"
                # every dynamic dim gets its own size: two dims sharing one would look like copies of each other
                k = len(by_param)
                size = by_param.setdefault(key, sizes[k] if k < len(sizes) else sizes[-1] + sizes[0] * (k - len(sizes) + 1))
                d.Clear()
                d.dim_value = size
    inferred = infer_shapes(probe)
    shapes = _known_shapes(inferred)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    # numpy first (the common shape ops on small tensors): the same values as the fold below at a fraction
    # of its time (each round of it imports, folds and exports the whole probe through onnxruntime)
    for _ in range(4 if opset < 15 else 0):
        if all(name in shapes for name in need) or not fold_small_constants(inferred, shapes):
            break
        inferred = infer_shapes(inferred, inplace=True)
        shapes.update(_known_shapes(inferred))
    # from opset 15 on, the rounds of _fold reach the same shapes more cheaply
    for _ in range(4 if opset < 15 else 0):
        if all(name in shapes for name in need):
            break
        graph = to_graph(inferred)
        _unplug_generators(graph, _known_shapes(inferred), _PROBE_FOLD_LIMIT)
        # shape tensors are small; the cap keeps ConstantOfShape masks of the probe sizes unfolded
        graph.fold_constants(fold_shapes=True, partitioning="recursive", error_ok=True, size_threshold=_PROBE_FOLD_LIMIT)
        inferred = infer_shapes(to_model(graph, like=probe))
        more = _known_shapes(inferred)
        if more.keys() <= shapes.keys():
            break
        shapes.update(more)
    return shapes


_PROBE_FOLD_LIMIT = 1 << 16
# ops whose output is not bounded by their inputs' size: a 16-byte shape makes a 4 TB tensor
_GENERATORS = frozenset({"ConstantOfShape", "Expand", "Tile", "Range", "Pad", "Resize", "Upsample"})


def _unplug_generators(graph: gs.Graph, shapes: dict, limit: int) -> None:
    """onnx-graphsurgeon's fold_constants checks its size_threshold on the tensors it returns, not on the
    intermediates it computes on the way (issue 15: a ReduceSum(Expand(1, [30000, 30000])) ran): a
    generator op whose output is not known to be under `limit` is cut out of the probe graph, so its output
    and everything computed from it stay unknown instead of being evaluated."""
    for node in graph.nodes:
        sizes = [shapes.get(out.name) for out in node.outputs]
        if node.op in _GENERATORS and any(s is None or int(np.prod(s, dtype=object)) * 8 > limit for s in sizes):
            node.outputs.clear()


def _known_shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    values = list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input)
    return {vi.name: tuple(dims) for vi in values if (dims := value_dims(vi)) is not None and None not in dims}


def static_reshape_shapes(graph: gs.Graph, model: onnx.ModelProto) -> int:
    """Replace a run-time computed Reshape shape by a constant: dims that do not move when the dynamic input
    dims change are static, dims that follow the input's same dim become 0 (copy), at most one other -1.
    Two shape inferences with different sizes for the dynamic dims tell which is which. Channel pruning
    can then rewrite the constant."""
    todo = [n for n in graph.nodes if n.op == "Reshape" and not isinstance(n.inputs[1], gs.Constant)
            and not int(n.attrs.get("allowzero", 0))]
    if not todo:
        return 0
    need = tuple(t for n in todo for t in (n.inputs[0].name, n.outputs[0].name))
    # Sizes far above common strides and far apart: divided by 2..64 (ceil or floor) they stay distinct from
    # each other and between the probes; with small ones ceil(H/32) is 1 in both probes and looks static, and
    # H/32 == W/32 makes one look like a copy of the other.
    first, second = _concrete_shapes(model, [97, 211, 331], need), _concrete_shapes(model, [163, 419, 661], need)
    changed = 0
    for node in todo:
        x, y = node.inputs[0].name, node.outputs[0].name
        if not all(t in s for t in (x, y) for s in (first, second)):
            continue
        dims = []
        for i, (a, b) in enumerate(zip(first[y], second[y])):
            if a == b:
                dims.append(a)
            elif (i < len(first[x]) and first[x][i] == a and second[x][i] == b
                  and sum(p == a and q == b for p, q in zip(first[x], second[x])) == 1):
                dims.append(0)  # follows the input's dim i, and no other input dim looks the same
            else:
                dims.append(-1)
        if dims.count(-1) > 1 or (0 in dims and 0 in first[y]):
            continue  # a true zero-sized dim would be read as "copy"
        node.inputs[1] = gs.Constant(f"{node.name}_static_shape", np.array(dims, dtype=np.int64))
        changed += 1
    graph.cleanup()
    return changed
