"""--fp16: float32 weights and compute become float16; the model's inputs and outputs keep their types
(Casts at the boundary), and some ops stay in float32.

Which tensors of a node change is read from the op's schema: every type variable of the node that is bound
to float32 and allows float16 moves to float16 together (inputs and outputs); formal parameters typed
`tensor(float)` outright (Resize scales) stay. A Cast is inserted on each edge whose two ends disagree; the
rewrite rules then merge the Cast chains this creates.

Kept in float32 (listed in the report with the reason):
- ops whose float inputs are coordinates, sizes or quantization parameters, where fp16's 11-bit mantissa
  moves results (Range, Resize, Upsample, RoiAlign, NonMaxSuppression, QuantizeLinear and friends);
- ops that square, exponentiate or multiply along an axis before reducing (ReduceSumSquare, ReduceL2,
  ReduceLogSumExp, ReduceProd, CumSum): their intermediates overflow fp16's 65504 long before the result;
- ops that generate values by attribute (random, ConstantOfShape, EyeLike), ops with subgraphs and
  non-standard domains;
- any op with a constant float input that fp16 cannot hold: |v| > 65504, or, in a small constant (up to 16
  values: epsilons, scales), a non-zero |v| that flushes to zero (1e-12 added before a division becomes 0).
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx_graphsurgeon as gs

BLOCK = {
    "Range": "computes indices/sizes", "Resize": "scales and coordinates", "Upsample": "scales",
    "RoiAlign": "box coordinates", "NonMaxSuppression": "box coordinates and thresholds",
    "QuantizeLinear": "quantization parameters", "DequantizeLinear": "quantization parameters",
    "DynamicQuantizeLinear": "quantization parameters",
    "ReduceSumSquare": "squares overflow fp16", "ReduceL2": "squares overflow fp16",
    "ReduceLogSumExp": "exponentials overflow fp16", "ReduceProd": "products overflow fp16",
    "CumSum": "running sums overflow fp16",
    "ConstantOfShape": "value set by attribute", "EyeLike": "type set by attribute",
    "RandomNormal": "type set by attribute", "RandomUniform": "type set by attribute",
    "RandomNormalLike": "type set by attribute", "RandomUniformLike": "type set by attribute",
    "Multinomial": "type set by attribute", "Bernoulli": "type set by attribute", "Constant": "value set by attribute",
}
FP16_MAX = 65504.0
FP16_TINY = 2.0 ** -24  # smallest subnormal: anything below rounds to zero
F32, F16 = np.dtype(np.float32), np.dtype(np.float16)


def _const_problem(t: gs.Constant) -> str | None:
    v = t.values.load() if hasattr(t.values, "load") else np.asarray(t.values)
    if v.dtype != F32 or v.size == 0:
        return None
    a = np.abs(v[np.isfinite(v)])
    if a.size and a.max() > FP16_MAX:
        return f"constant '{t.name}' exceeds the fp16 range ({a.max():.3g})"
    # a weight entry flushing to zero changes a sum negligibly; a lone epsilon or scale doing so does not
    if a.size <= 16 and np.any((a > 0) & (a < FP16_TINY)):
        return f"constant '{t.name}' has non-zero values that fp16 flushes to zero"
    return None


def _formals(schema, n: int, outputs: bool) -> list[str]:
    """The type string (a type variable or a concrete type) of each of n actual inputs/outputs."""
    params = schema.outputs if outputs else schema.inputs
    return [params[min(i, len(params) - 1)].type_str for i in range(n)]


def _convertible_vars(node: gs.Node, opset: int) -> tuple[set[str], list[str], list[str]] | str:
    """(type variables that move to fp16, input formals, output formals), or why the node stays fp32."""
    if node.op in BLOCK:
        return BLOCK[node.op]
    if node.domain not in ("", None, "ai.onnx"):
        return "non-standard domain"
    if any(isinstance(v, gs.Graph) for v in node.attrs.values()):
        return "holds subgraphs"
    try:
        schema = onnx.defs.get_schema(node.op, opset, "")
    except Exception:
        return "no schema for this op"
    ins, outs = _formals(schema, len(node.inputs), False), _formals(schema, len(node.outputs), True)
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    bound: dict[str, set] = {}
    for t, f in list(zip(node.inputs, ins)) + list(zip(node.outputs, outs)):
        if t.name and f in allowed:
            bound.setdefault(f, set()).add(F32 if _is_f32(t) else ("other", str(t.dtype)))
    conv = {v for v, types in bound.items() if types == {F32} and "tensor(float16)" in allowed[v]}
    if not conv:
        return "no float32 tensors"
    for t, f in zip(node.inputs, ins):
        if f in conv and isinstance(t, gs.Constant):
            problem = _const_problem(t)
            if problem:
                return problem
    return conv, ins, outs


def _is_f32(t) -> bool:
    try:
        return t.dtype is not None and np.dtype(t.dtype) == F32
    except TypeError:  # bfloat16 / float8 arrive as onnx type ints
        return False


def _plan(graph: gs.Graph, opset: int):
    plan, kept, reasons = {}, Counter(), {}
    for node in graph.nodes:
        r = _convertible_vars(node, opset)
        if not isinstance(r, str):
            plan[id(node)] = (node, r)
        elif any(_is_f32(t) for t in list(node.inputs) + list(node.outputs)):
            kept[node.op] += 1
            reasons.setdefault(node.op, r)
    return plan, kept, reasons


class _Versions:
    """The fp16 and fp32 versions of each float32 tensor, made on demand by a Cast (or, for constants, a
    converted copy) and shared by every consumer that needs them."""

    def __init__(self, graph: gs.Graph, opset: int):
        from .engine import RewriteContext
        self.graph, self.cache, self.casts = graph, {}, 0
        self.fresh = RewriteContext(graph, opset).fresh

    def get(self, t, want: np.dtype, have: np.dtype):
        if want == have:
            return t
        key = (id(t), want)
        if key not in self.cache:
            if isinstance(t, gs.Constant):
                v = t.values.load() if hasattr(t.values, "load") else np.asarray(t.values)
                self.cache[key] = gs.Constant(self.fresh(f"{t.name}_{want.name}"), v.astype(want))
            else:
                out = gs.Variable(self.fresh(f"{t.name}_{want.name}"), dtype=want, shape=t.shape)
                to = onnx.TensorProto.FLOAT16 if want == F16 else onnx.TensorProto.FLOAT
                self.graph.nodes.append(gs.Node("Cast", name=self.fresh(f"{t.name}_cast_{want.name}"), attrs={"to": to}, inputs=[t], outputs=[out]))
                self.casts += 1
                self.cache[key] = out
        return self.cache[key]


def convert_graph(graph: gs.Graph, opset: int) -> dict:
    """Convert in place; returns the report part: ops kept in fp32 (count and reason), Casts inserted."""
    plan, kept, reasons = _plan(graph, opset)
    originals = list(graph.nodes)  # the Casts added below are not to be visited
    was_f32 = {id(t) for t in graph.tensors().values() if _is_f32(t)}
    outputs = {id(t) for t in graph.outputs}
    native: dict[int, np.dtype] = {}  # type each float32 tensor is produced in after conversion
    versions = _Versions(graph, opset)
    for node, (conv, _, outs) in plan.values():
        for i, (t, f) in enumerate(zip(list(node.outputs), outs)):
            if f not in conv or id(t) not in was_f32:
                continue
            if id(t) in outputs:  # the graph output keeps its name and type: the node writes an fp16 twin
                twin = gs.Variable(versions.fresh(f"{t.name}_fp16"), dtype=F16, shape=t.shape)
                node.outputs[i] = twin
                versions.cache[(id(twin), F32)] = t
                graph.nodes.append(gs.Node("Cast", name=versions.fresh(f"{t.name}_cast_out"), attrs={"to": onnx.TensorProto.FLOAT},
                                           inputs=[twin], outputs=[t]))
                versions.casts += 1
                native[id(twin)] = F16
                was_f32.add(id(twin))
                versions.cache[(id(t), F16)] = twin
                native[id(t)] = F32
            else:
                t.dtype = F16
                native[id(t)] = F16
        if node.op == "Cast" and outs[0] in conv:  # a Cast to float now casts to float16
            node.attrs["to"] = onnx.TensorProto.FLOAT16
    for node in originals:
        conv, ins, _ = plan[id(node)][1] if id(node) in plan else (set(), [""] * len(node.inputs), None)
        for i, (t, f) in enumerate(zip(list(node.inputs), ins)):
            if id(t) not in was_f32:
                continue
            want = F16 if f in conv else F32
            have = F32 if isinstance(t, gs.Constant) else native.get(id(t), F32)
            node.inputs[i] = versions.get(t, want, have)
    return {"kept_fp32": dict(sorted(kept.items())), "kept_fp32_reasons": reasons, "casts_inserted": versions.casts,
            "converted_nodes": len(plan)}


def to_fp16(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    """A float16 copy of a float32 model with the same input and output names and types."""
    from onnxslim.graph import infer_shapes, to_graph, to_model

    from . import apply_rules

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    graph = to_graph(infer_shapes(model))
    report = convert_graph(graph, opset)
    graph.cleanup()
    report["rules"] = apply_rules(graph, opset=opset)  # Cast(Cast(x)) pairs from adjacent fp32 ops
    out = to_model(graph, like=model)
    out.graph.ClearField("value_info")
    return infer_shapes(out), report
