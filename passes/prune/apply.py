"""Rewrite a graph for a keep plan: slice every member constant, fix shape-carrying attributes/constants,
and build the *masked* model that is the correctness oracle (DESIGN.md): the original with removed channels
zeroed at every exit."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from onnxslim.channels import EXIT, Analysis
from onnxslim.graph import clear_intermediate_shapes, infer_shapes, to_model
from onnxslim.ondisk import disk_constant, is_on_disk, values_of

Plan = dict  # group id -> bool mask over the group's classes (True = keep)


def kept_positions(analysis: Analysis, plan: Plan) -> dict[int, np.ndarray]:
    """Space id -> kept positions, for spaces of groups that lose at least one class."""
    keep = {}
    for group in analysis.groups:
        mask = plan.get(group.id)
        if mask is None or mask.all():
            continue
        if (~mask & group.frozen).any():
            raise ValueError(f"plan removes frozen channels of group {group.id}")
        for space in group.spaces:
            keep[space.id] = np.flatnonzero(mask[group.class_of[space.id]])
    return keep


def _copy(analysis: Analysis) -> tuple[gs.Graph, dict[int, gs.Node]]:
    """A copy of the analysis graph and {id(analysis node): its copy}: the plans edit the copy, so one
    analysis serves any number of plans (the search, the oracle) and stays what it describes."""
    graph = analysis.graph.copy()
    graph.producer_name, graph.producer_version = analysis.graph.producer_name, analysis.graph.producer_version  # copy() drops them
    return graph, {id(a): b for a, b in zip(analysis.graph.nodes, graph.nodes)}


def apply_plan(analysis: Analysis, plan: Plan, like: onnx.ModelProto) -> onnx.ModelProto:
    """The pruned model (shapes re-inferred), made on a copy of `analysis.graph`."""
    keep = kept_positions(analysis, plan)
    if not keep:
        return like
    graph, twin = _copy(analysis)
    per_use: dict[tuple[str, int], list] = {}
    for space in analysis.spaces:
        if space.is_constant and space.id in keep:
            per_use.setdefault((space.node, space.input_index), []).append(space)
    for (node_name, index), spaces in per_use.items():
        node = twin[id(analysis.nodes[node_name])]
        weight = node.inputs[index]
        values = values_of(weight)  # the original of a weight on disk is not kept once pruned
        for space in spaces:
            values = np.take(values, keep[space.id], axis=space.axis)
        name, values = f"{weight.name}__{node_name}_pruned", np.ascontiguousarray(values)
        # a weight on disk is pruned to disk as it is produced: the pruned model is never held in memory
        node.inputs[index] = disk_constant(name, values) if is_on_disk(weight) else gs.Constant(name, values)
    for node, fix in analysis.rewrites:
        fix(keep, node=twin[id(node)])
    clear_intermediate_shapes(graph)
    return infer_shapes(to_model(graph, like=like))


def masked_model(analysis: Analysis, plan: Plan, like: onnx.ModelProto) -> onnx.ModelProto:
    """The original with the removed channels zeroed at every exit (the oracle the pruned model must match),
    made on a copy of `analysis.graph`."""
    keep = kept_positions(analysis, plan)
    graph, twin = _copy(analysis)
    for space in analysis.spaces:
        if space.role != EXIT or space.id not in keep:
            continue
        node = twin[id(analysis.nodes[space.node])]
        values = node.inputs[space.input_index].values.copy()
        removed = np.setdiff1d(np.arange(space.size), keep[space.id])
        index = [slice(None)] * values.ndim
        index[space.axis] = removed
        values[tuple(index)] = 0
        node.inputs[space.input_index] = gs.Constant(f"{node.inputs[space.input_index].name}__{space.node}_masked", values)
    return to_model(graph, like=like)
