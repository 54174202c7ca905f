"""Why a model has nothing to prune, said before any work: a run that prunes 0 of 0 groups helps no one."""
from __future__ import annotations

import onnx

from onnxslim.errors import SlimError

_WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
_INTEGER = ("QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul", "MatMulIntegerToFloat")


def quantized_weight_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes whose weights are int8: integer kernels, or float layers fed by a DequantizeLinear weight."""
    producer = {o: n for n in model.graph.node for o in n.output}
    found = []
    for node in model.graph.node:
        weight = producer.get(node.input[1]) if len(node.input) > 1 else None
        if node.op_type in _INTEGER or (node.op_type in _WEIGHTED and weight is not None and weight.op_type == "DequantizeLinear"):
            found.append(node.name or node.op_type)
    return found


def check_something_prunable(model: onnx.ModelProto, analysis) -> list[str]:
    """Raise when the weights are quantized (pruning needs the float weights); else the notes to report."""
    if analysis.prunable_groups:
        return []
    quantized = quantized_weight_nodes(model)
    if quantized:
        raise SlimError(f"nothing to prune: the model is already quantized ({len(quantized)} layers have int8 weights, "
                        f"e.g. '{quantized[0]}' fed by DequantizeLinear); prune the float model, and add --quantize int8 "
                        "to quantize it after pruning in the same run")
    return ["no channel group is prunable: every group is frozen (`onnxslim inspect MODEL` says why)"]
