"""Unique, non-empty node names."""
from __future__ import annotations

import onnx_graphsurgeon as gs


def name_nodes(graph) -> None:
    """Every node gets a unique, non-empty name: reports and --exclude refer to nodes by name. A name the model
    gives one node only is kept; the first holder of a repeated name keeps it; new names avoid every
    existing one (so a generated name never takes a name the user sees in the original). `graph`: a
    gs.Graph or an onnx.GraphProto."""
    nodes = graph.nodes if isinstance(graph, gs.Graph) else graph.node
    taken = {node.name for node in nodes if node.name}
    kept: set[str] = set()
    for i, node in enumerate(nodes):
        if node.name and node.name not in kept:
            kept.add(node.name)
            continue
        base = node.name or f"{getattr(node, 'op', None) or node.op_type}_{i}"
        name, k = base, 1
        while name in taken:
            name = f"{base}_{k}"
            k += 1
        node.name = name
        taken.add(name)
        kept.add(name)
