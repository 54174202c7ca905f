"""Normalization before analysis: constant folding (Shape-derived subgraphs included where dims are static),
static Reshape shapes, Identity/Dropout removal, unique node names, and BatchNorm folding into Conv.

Every later pass assumes this form: weights are gs.Constant inputs, Reshape shapes are constants, every node
has a unique name.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort

from onnxslim.context import Context, PassResult
from onnxslim.graph import infer_shapes, light_copy, to_graph, to_model

logging.getLogger("onnx_graphsurgeon").setLevel(logging.ERROR)
ort.set_default_logger_severity(3)  # folding sessions warn about graph rewrites our users cannot act on
gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.ERROR  # its folding chatter is not for our users


@dataclass
class CleanupConfig:
    fold_bn: bool = True  # False keeps BatchNormalization nodes (the `bn` importance criterion reads them)
    rules: bool = True  # the lossless rewrite rules of passes/rewrite (fusions, eliminations, CSE, weight tying)
    fp16: bool = False  # float16 weights and compute, input/output types kept (passes/rewrite/fp16.py)


def run(model: onnx.ModelProto, config: CleanupConfig | None = None, ctx: Context | None = None) -> PassResult:
    config = config or CleanupConfig()
    nodes_before = len(model.graph.node)
    graph, static_reshapes = _fold(model)
    removed_identity = _remove_passthrough(graph)
    folded_bn = _fold_batchnorm(graph) if config.fold_bn else 0
    rules = _rewrite(graph, model, config) if config.rules else {}
    _name_nodes(graph)
    model_out = infer_shapes(to_model(graph, like=model), inplace=True)
    fp16 = None
    if config.fp16:
        from onnxslim.passes.rewrite.fp16 import to_fp16
        model_out, fp16 = to_fp16(model_out)
    report = {
        "nodes_before": nodes_before,
        "nodes_after": len(model_out.graph.node),
        "batchnorm_folded": folded_bn,
        "identity_removed": removed_identity,
        "reshape_shapes_made_static": static_reshapes,
        "rules": rules,
    }
    if fp16 is not None:
        report["fp16"] = fp16
    return PassResult(model_out, report)


def _fold(model: onnx.ModelProto, rounds: int = 8) -> tuple[gs.Graph, int]:
    """Fold constants, make Reshape shapes static, re-infer shapes, repeat: a static Reshape makes the dims
    after it known, which lets the next round fold the Shape ops that read them. Each step runs only when
    there is something for it to do: exporting a large model is what costs time and memory here."""
    graph = to_graph(infer_shapes(model))
    static = 0
    for _ in range(rounds):
        changed = False
        if _has_foldable(graph):
            before = len(graph.nodes)
            graph.toposort()
            # partitioning keeps one unfoldable corner from blocking every other fold
            graph.fold_constants(fold_shapes=True, partitioning="recursive", error_ok=True)
            graph.cleanup()
            changed = len(graph.nodes) != before
        made = 0
        if any(n.op == "Reshape" and not isinstance(n.inputs[1], gs.Constant) for n in graph.nodes):
            current = infer_shapes(to_model(graph, like=model), inplace=True)
            graph = to_graph(current)
            made = _static_reshape_shapes(graph, current)
            static += made
        if not changed and not made:
            break
        graph = to_graph(infer_shapes(to_model(graph, like=model), inplace=True))
    return graph, static


def _rewrite(graph: gs.Graph, model: onnx.ModelProto, config: CleanupConfig) -> dict[str, int]:
    """The rewrite rules to a fixpoint; a fusion can leave constant-only nodes behind, folded again here."""
    from onnxslim.passes.rewrite import apply_rules
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    # keeping BN for the `bn` criterion also keeps it off ConvTranspose
    counts = apply_rules(graph, skip=set() if config.fold_bn else {"convtranspose_bn"}, opset=opset)
    if counts and _has_foldable(graph):
        graph.fold_constants(fold_shapes=False, partitioning="recursive", error_ok=True)
        graph.cleanup().toposort()
    return counts


def _has_foldable(graph: gs.Graph) -> bool:
    """A node computed from constants only, or a Shape (foldable when the dims it reads are static)."""
    for node in graph.nodes:
        if node.op == "Shape" or (node.op not in ("RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial")
                                  and node.inputs and all(isinstance(t, gs.Constant) or t.name == "" for t in node.inputs)):
            return True
        if node.op == "Constant":
            return True
    return False


def _remove_passthrough(graph: gs.Graph) -> int:
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


def _fold_batchnorm(graph: gs.Graph) -> int:
    """Conv -> BN with the Conv output used only by BN: W' = W * s, b' = (b - mean) * s + beta, s = gamma/sqrt(var+eps)."""
    folded = 0
    outputs = {id(t) for t in graph.outputs}
    for bn in list(graph.nodes):
        if bn.op != "BatchNormalization" or any(o.outputs or id(o) in outputs for o in bn.outputs[1:]):
            continue  # its running mean/var outputs are used
        if int(bn.attrs.get("training_mode", 0)):
            continue  # normalizes by the batch's own statistics, not the running ones: not a per-channel affine
        x = bn.inputs[0]
        conv = x.inputs[0] if len(x.inputs) == 1 else None
        if conv is None or conv.op not in ("Conv", "ConvTranspose") or len(x.outputs) != 1 or id(x) in outputs:
            continue
        params = bn.inputs[1:5]
        if not all(isinstance(p, gs.Constant) for p in params) or not isinstance(conv.inputs[1], gs.Constant):
            continue
        gamma, beta, mean, var = (p.values.astype(np.float64) for p in params)
        eps = float(bn.attrs.get("epsilon", 1e-5))
        scale = gamma / np.sqrt(var + eps)
        w = conv.inputs[1].values.astype(np.float64)
        if conv.op == "Conv":
            w = w * scale.reshape(-1, *([1] * (w.ndim - 1)))
        else:  # ConvTranspose weight is [Cin, Cout/g, ...]; only groups=1 is folded
            if int(conv.attrs.get("group", 1)) != 1:
                continue
            w = w * scale.reshape(1, -1, *([1] * (w.ndim - 2)))
        bias = conv.inputs[2].values.astype(np.float64) if len(conv.inputs) > 2 and isinstance(conv.inputs[2], gs.Constant) else np.zeros_like(mean)
        if len(conv.inputs) > 2 and not isinstance(conv.inputs[2], gs.Constant):
            continue
        bias = (bias - mean) * scale + beta
        dtype = conv.inputs[1].values.dtype
        conv.inputs[1] = gs.Constant(conv.inputs[1].name + "_bnfold", w.astype(dtype))
        b_const = gs.Constant((conv.name or "conv") + "_bias_bnfold", bias.astype(dtype))
        if len(conv.inputs) > 2:
            conv.inputs[2] = b_const
        else:
            conv.inputs.append(b_const)
        y = bn.outputs[0]
        conv.outputs = [y]
        bn.inputs.clear()
        bn.outputs.clear()
        folded += 1
    graph.cleanup()
    return folded


def _name_nodes(graph: gs.Graph) -> None:
    """Every node gets a unique, non-empty name: reports and --exclude refer to nodes by name. A name the model
    gives one node only is kept; the first holder of a repeated name keeps it; new names avoid every
    existing one (so a generated name never takes a name the user sees in the original)."""
    counts: dict[str, int] = {}
    for node in graph.nodes:
        counts[node.name] = counts.get(node.name, 0) + 1
    taken = {name for name in counts if name}
    kept: set[str] = set()
    for i, node in enumerate(graph.nodes):
        if node.name and node.name not in kept:
            kept.add(node.name)
            continue
        base = node.name or f"{node.op}_{i}"
        name, k = base, 1
        while name in taken:
            name = f"{base}_{k}"
            k += 1
        node.name = name
        taken.add(name)
        kept.add(name)


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
    # from opset 15 on, the rounds of _fold reach the same shapes more cheaply
    for _ in range(4 if opset < 15 else 0):
        if all(name in shapes for name in need):
            break
        graph = to_graph(inferred)
        # shape tensors are small; the cap keeps ConstantOfShape masks of the probe sizes unfolded
        graph.fold_constants(fold_shapes=True, partitioning="recursive", error_ok=True, size_threshold=1 << 16)
        inferred = infer_shapes(to_model(graph, like=probe))
        more = _known_shapes(inferred)
        if more.keys() <= shapes.keys():
            break
        shapes.update(more)
    return shapes


def _known_shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    shapes = {}
    for vi in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input):
        dims = vi.type.tensor_type.shape.dim
        if vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(d.dim_value for d in dims)
    return shapes


def _static_reshape_shapes(graph: gs.Graph, model: onnx.ModelProto) -> int:
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
        dims, unknown = [], 0
        for i, (a, b) in enumerate(zip(first[y], second[y])):
            if a == b:
                dims.append(a)
            elif (i < len(first[x]) and first[x][i] == a and second[x][i] == b
                  and sum(p == a and q == b for p, q in zip(first[x], second[x])) == 1):
                dims.append(0)  # follows the input's dim i, and no other input dim looks the same
            else:
                dims.append(-1)
                unknown += 1
        if unknown > 1 or (0 in dims and 0 in first[y]):
            continue  # a true zero-sized dim would be read as "copy"
        node.inputs[1] = gs.Constant(f"{node.name}_static_shape", np.array(dims, dtype=np.int64))
        changed += 1
    graph.cleanup()
    return changed
