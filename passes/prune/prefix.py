"""Tapped sessions that run only the nodes the tapped tensors depend on (the repair waves, issue 11 run time).

onnxruntime runs every node of a graph whatever outputs a run asks for, and a repair wave taps only its own
exits' tensors: the first of 8 waves needs about an eighth of the network. The part kept is the tensors'
ancestors, nodes in their order. So that onnxruntime optimizes it as it does the whole model, every kept
tensor that the whole model reads elsewhere (a removed node) or returns stays a graph output: its kept
consumers then see it shared or returned, as in the whole model, and no fusion is formed that the whole
model's session would not form (a fusion takes a tensor with one consumer that is not a graph output). The
session gets the whole model's optimization level (runtime.fusion_loses_tap), so the tapped values are the
whole model's (tests/test_prune_stats_cache.py compares them bit for bit).
"""
from __future__ import annotations

import onnx

from onnxslim.runtime import fusion_loses_tap, session, tapped_session, with_outputs


def prefix_model(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto | None:
    """`model` cut down to the ancestors of `names`, returning `names` first; None when nothing would be cut
    or the model has subgraphs (an If/Loop body reads outer tensors without naming them)."""
    nodes = list(model.graph.node)
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in nodes for a in n.attribute):
        return None
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    keep, todo = set(), [producer[n] for n in names if n in producer]
    while todo:
        i = todo.pop()
        if i not in keep:
            keep.add(i)
            todo.extend(producer[t] for t in nodes[i].input if t in producer)
    if len(keep) == len(nodes):
        return None
    read_elsewhere = {t for i, n in enumerate(nodes) if i not in keep for t in n.input}
    read_elsewhere |= {o.name for o in model.graph.output}
    shared = [o for i in sorted(keep) for o in nodes[i].output if o and o in read_elsewhere]
    part = onnx.ModelProto()
    part.CopyFrom(model)
    del part.graph.node[:]
    part.graph.node.extend(nodes[i] for i in sorted(keep))
    del part.graph.output[:]
    return with_outputs(part, list(dict.fromkeys([*names, *shared])))


def prefix_session(model: onnx.ModelProto, names: list[str]):
    """(session, output names) like runtime.tapped_session(model, names), running only what `names` need;
    the names returned start with `names`."""
    part = prefix_model(model, names)
    if part is None:
        return tapped_session(model, names)
    return session(part, basic=fusion_loses_tap(model, names)), [o.name for o in part.graph.output]
