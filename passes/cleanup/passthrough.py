"""Identity and inference-mode Dropout removal."""
from __future__ import annotations

import onnx_graphsurgeon as gs


def remove_passthrough(graph: gs.Graph) -> int:
    """Bypass Identity and inference-mode Dropout (only their first output is ever meaningful)."""
    outputs = {id(t) for t in graph.outputs}
    removed = 0
    for node in list(graph.nodes):
        if node.op not in ("Identity", "Dropout") or not node.inputs:
            continue
        if node.op == "Dropout" and len(node.outputs) > 1 and node.outputs[1].outputs:
            continue  # the mask is used: leave it
        src, dst = node.inputs[0], node.outputs[0]
        if id(dst) in outputs:
            if isinstance(src, gs.Constant) or id(src) in outputs or src in graph.inputs:
                continue  # a graph output must stay a distinct produced tensor
            # rename: the producer now writes the graph output directly
            producer = src.inputs[0] if src.inputs else None
            if producer is None:
                continue
            for consumer in list(src.outputs):
                if consumer is node:
                    continue
                consumer.inputs = [dst if t is src else t for t in consumer.inputs]
            producer.outputs = [dst if t is src else t for t in producer.outputs]
            node.outputs.clear()
            node.inputs.clear()
        else:
            for consumer in list(dst.outputs):
                consumer.inputs = [src if t is dst else t for t in consumer.inputs]
            node.outputs.clear()
            node.inputs.clear()
        removed += 1
    graph.cleanup()
    return removed
