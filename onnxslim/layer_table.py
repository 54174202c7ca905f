"""Per-layer before/after for the report: output width and MACs of every weighted layer of the cleaned-up
model next to the same layer of the optimized one (a low-rank split's two halves count as one layer)."""
from __future__ import annotations

from .cost import node_costs
from .errors import SlimError

WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
# what the weighted layers become after int8 quantization (dynamic: MatMulInteger named '<layer>_quant')
INTEGER = ("ConvInteger", "QLinearConv", "MatMulInteger", "QLinearMatMul", "MatMulIntegerToFloat", "DynamicQuantizeMatMul")
_SPLIT = "/lowrank_"  # low-rank halves are named '<layer>/lowrank_0' and '<layer>/lowrank_1' (passes/lowrank/rewrite.py)
_QUANT = "_quant"


def _width(cost) -> int | None:
    shape = cost.output_shape
    if not shape:
        return None
    return shape[1] if "Conv" in cost.op_type and len(shape) > 1 else shape[-1]


def _layer_of(name: str) -> str:
    """The original layer a node of the optimized model comes from (by the names our passes and
    onnxruntime's quantizer give)."""
    base = name.split(_SPLIT)[0]
    return base[:-len(_QUANT)] if base.endswith(_QUANT) else base


def compare_layers(before, after, input_shapes: dict | None = None) -> list[dict]:
    """[{name, op, width_before, width_after, rank, macs_before, macs_after}] for the weighted layers of
    `before`, in graph order; [] when the shapes cannot be resolved (the report then has no per-layer part)."""
    try:
        old = [c for c in node_costs(before, input_shapes) if c.op_type in WEIGHTED and c.params]
        new = node_costs(after, input_shapes)
    except SlimError:
        return []
    parts: dict[str, list] = {}
    for c in new:
        if c.op_type in WEIGHTED + INTEGER:
            parts.setdefault(_layer_of(c.name), []).append(c)
    rows = []
    for c in old:
        mine = parts.get(c.name, [])
        last = mine[-1] if mine else None
        split = [p for p in mine if _SPLIT in p.name]
        rows.append({
            "name": c.name, "op": c.op_type,
            "width_before": _width(c), "width_after": _width(last) if last else 0,
            "rank": _width(split[0]) if len(split) == 2 else None,
            "macs_before": c.macs, "macs_after": sum(p.macs or 0 for p in mine) if mine else 0,
        })
    return rows
