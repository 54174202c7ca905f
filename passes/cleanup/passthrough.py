"""Identity and inference-mode Dropout removal."""
from __future__ import annotations

import onnx_graphsurgeon as gs

from onnxslim.passes.rewrite.engine import RewriteContext
from onnxslim.passes.rewrite.util import bypass, replace_check


def remove_passthrough(graph: gs.Graph) -> int:
    """Bypass Identity and inference-mode Dropout (only their first output is ever meaningful). A graph
    output stays a distinct produced tensor: the input's producer then writes it (rewrite.util.bypass)."""
    ctx = RewriteContext(graph, 0)
    removed = 0
    for node in list(graph.nodes):
        if node.op not in ("Identity", "Dropout") or not node.inputs:
            continue
        if node.op == "Dropout" and len(node.outputs) > 1 and node.outputs[1].outputs:
            continue  # the mask is used: leave it
        if replace_check(node.outputs[0], node.inputs[0], ctx) is None:
            bypass(node, node.inputs[0], ctx)
            removed += 1
    graph.cleanup()
    return removed
