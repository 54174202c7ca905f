"""Constant folding and dead-node elimination with onnxscript's folder on onnx-ir.

Why onnxscript: measured on ONNX's 1884 backend node cases (benchmarks/RESULTS.md, issue 10), its folder
left 0 broken and 0 wrong models where onnx-graphsurgeon's fold broke 136 (its Shape folding ignores
Shape's start/end); it also folds Shape subgraphs where only some dims are symbolic (Shape -> Gather of a
static dim -> Concat -> Reshape with a symbolic batch), which onnxruntime's offline optimizer does not.

The size threshold is checked in `should_fold`, which the folder calls after inferring the node's output
shape and before evaluating it: a fold that would exceed it is never computed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common
from onnxscript.optimizer import fold_constants

from onnxslim.units import first_line
from onnxslim.warn import quiet_logger

from .shape_reads import fold_shape_reads, new_initializer

# ops left as they are: folding Q/DQ would drop the quantization a model was built with
KEEP_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}
# ops whose output can be far larger than their inputs: folded only when the output size is known
GROWING_OPS = {"ConstantOfShape", "Expand", "Tile", "Range", "Pad", "Resize", "Upsample", "OneHot",
               "EyeLike", "MatMul", "Gemm", "Einsum", "Col2Im", "ConvTranspose"}
_UNLIMITED = 2**62


@dataclass
class FoldReport:
    folded_nodes: int = 0
    dead_nodes: int = 0
    inlined_functions: int = 0
    shape_reads: int = 0  # static dims read from partly symbolic shapes, made constant
    constants_lifted: int = 0  # Constant nodes made initializers
    passthrough: int = 0  # Identity and Dropout nodes the folder bypassed
    too_large: list = field(default_factory=list)  # "node (op): N bytes" left unfolded by the threshold
    errors: list = field(default_factory=list)  # ops the folder failed on, left unfolded


def fold(model: onnx.ModelProto, size_threshold: int) -> tuple[onnx.ModelProto, FoldReport]:
    """Inline local functions, fold constants (never materializing more than `size_threshold` bytes per
    tensor), remove dead nodes; constants become initializers. An op the folder fails on is left as it is
    and folding is retried without it."""
    report = FoldReport()
    skip: set[str] = set()
    for _ in range(4):
        irm = ir.serde.deserialize_model(model)
        functions = len(irm.functions)
        common.InlinePass()(irm)
        report.inlined_functions = functions - len(irm.functions)
        inlined, passthrough = _count(irm.graph), _count(irm.graph, PASSTHROUGH)
        too_large: list = []
        try:
            report.shape_reads = _fold_rounds(irm, _gate(size_threshold, skip, too_large))
        except Exception as err:  # the folder raises RuntimeError naming the node's op
            op = _failed_op(err)
            if op is None or op in skip:
                report.errors.append(f"constant folding failed ({first_line(err)[:160]}); model left unfolded")
                return model, report
            skip.add(op)
            report.errors.append(f"{op}: the folder failed on it ({first_line(err.__cause__ or err)[:160]}); left unfolded")
            continue
        folded = _count(irm.graph)
        common.RemoveUnusedNodesPass()(irm)
        common.RemoveUnusedFunctionsPass()(irm)
        constants = _count(irm.graph, ("Constant",))
        common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(irm)
        report.constants_lifted = constants - _count(irm.graph, ("Constant",))
        report.passthrough = passthrough - _count(irm.graph, PASSTHROUGH)
        report.folded_nodes = max(0, inlined - folded - report.passthrough)
        report.dead_nodes = max(0, folded - _count(irm.graph) - report.constants_lifted)
        report.too_large = too_large
        out = ir.serde.serialize_model(irm)
        # keep the model's own imports (the passes drop unused ones)
        have = {o.domain for o in model.opset_import}
        opsets = list(model.opset_import) + [o for o in out.opset_import if o.domain not in have]
        del out.opset_import[:]
        out.opset_import.extend(opsets)
        return out, report
    return model, report


PASSTHROUGH = ("Identity", "Dropout")


def _fold_rounds(irm, should_fold, rounds: int = 4) -> int:
    """The folder, then static dims read from partly symbolic shapes (shape_reads), repeated while the
    latter finds something: each makes more of the other foldable."""
    reads = 0
    for _ in range(rounds):
        with quiet_logger("onnxscript"):  # it logs every skipped node; our report says what matters
            fold_constants(irm, onnx_shape_inference=True, input_size_limit=_UNLIMITED,
                           output_size_limit=_UNLIMITED, should_fold=should_fold)
        found = fold_shape_reads(irm.graph)
        reads += found
        _scalar_range_inputs(irm.graph)
        if not found:
            break
    return reads


def _scalar_range_inputs(graph) -> None:
    """Range takes scalars; onnxruntime runs it on one-element 1-D tensors too, but rejects a model whose
    constant Range input is one at load time. A folded If branch can yield such a constant: make it 0-D."""
    for node in graph:
        if node.op_type != "Range" or node.domain not in ("", "ai.onnx"):
            continue
        for i, value in enumerate(node.inputs):
            tensor = value.const_value if value is not None else None
            if tensor is None or tensor.size != 1 or len(tensor.shape) == 0:
                continue
            node.replace_input_with(i, new_initializer(graph, f"{value.name}_scalar", tensor.numpy().reshape(()), tensor.dtype))


def _count(graph, ops=None) -> int:
    return sum(1 for node in graph if ops is None or node.op_type in ops)


def _gate(threshold: int, skip: set, too_large: list):
    """should_fold: False for ops kept as they are and for outputs over the threshold (checked on the
    shapes inferred before evaluation); True otherwise (no element-count limits of the folder's own)."""
    def should_fold(node) -> bool | None:
        if node.op_type in KEEP_OPS or node.op_type in skip:
            return False
        total = 0
        for out in node.outputs:
            size = _bytes(out)
            if size is None:
                if node.op_type in GROWING_OPS:
                    return False  # no shape: the output could be anything
                continue
            total += size
        if total > threshold:
            too_large.append(f"{node.name or node.op_type} ({node.op_type}): {total} bytes > --size-threshold {threshold}")
            return False
        return True
    return should_fold


def _bytes(value) -> int | None:
    shape, dtype = value.shape, value.dtype
    if shape is None or dtype is None or not all(isinstance(d, int) for d in shape.dims):
        return None
    try:
        itemsize = max(1, dtype.itemsize)
    except Exception:
        itemsize = 8  # strings and unknown kinds: an estimate on the safe side
    return int(np.prod(shape.dims, dtype=np.int64)) * itemsize


def _failed_op(err: Exception) -> str | None:
    match = re.search(r"\(([\w.]*)::(\w+)\)", str(err))
    return match.group(2) if match else None

