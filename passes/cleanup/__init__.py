"""Normalization before analysis, and the bare command's lossless optimizer: constant folding (Shape-derived
subgraphs included, symbolic dims too), dead-node elimination, static Reshape shapes, Identity/Dropout
removal, BatchNorm folding into Conv, unique node names; the rewrite rules of `onnxslim.passes.rewrite`
when that package is present.

Every later pass assumes this form: weights are gs.Constant inputs, Reshape shapes are constants where the
model allows it, every node has a unique name.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field

import onnx
import onnx_graphsurgeon as gs

from onnxslim.context import Context, PassResult
from onnxslim.errors import SlimError
from onnxslim import ondisk
from onnxslim.graph import infer_shapes, size_upper_bound, to_graph, to_model
from onnxslim.protocol import BATCHNORM, FLOAT32, FOLDED, NORMALIZED, Pass, option

from onnxslim.passes import rewrite

from .batchnorm import fold_batchnorm
from .fold import fold
from .naming import name_nodes
from .passthrough import remove_passthrough
from .static_reshape import static_reshape_shapes
from onnxslim.passes.rewrite.fp16 import to_fp16

logging.getLogger("onnx_graphsurgeon").setLevel(logging.ERROR)
gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.ERROR  # its chatter is not for our users

GIB = 2**30


@dataclass
class CleanupConfig:
    fold_bn: bool = True  # False keeps BatchNormalization nodes (the `bn` importance criterion reads them)
    # bytes: folding never materializes a larger tensor; None = twice the model's size, at least 64 MiB, at most 1 GiB
    size_threshold: int | None = field(default=None, metadata=option(
        "--size-threshold", type=int, default=None, metavar="BYTES",
        help="Constant folding never materializes a tensor larger than this; such folds are left as ops and "
             "listed in the report. Default: twice the model's size, at least 64 MiB, at most 1 GiB."))
    rules: bool = True  # the lossless rewrite rules of passes/rewrite (fusions, eliminations, CSE, weight tying)
    # float16 weights and compute, input/output types kept (passes/rewrite/fp16.py)
    fp16: bool = field(default=False, metadata=option(
        "--fp16", is_flag=True, enables=True, help="Float16 weights and compute; input/output types kept, overflow-prone ops left in float32."))

    def check(self) -> None:
        if self.size_threshold is not None and self.size_threshold < 0:
            raise SlimError(f"--size-threshold {self.size_threshold}: give a number of bytes >= 0")


class CleanupPass(Pass):
    """Runs first on every run; again before a pass that needs a FOLDED graph after others edited it."""
    name = "cleanup"
    config = CleanupConfig
    always = True

    def provides(self, config) -> set[str]:
        return {NORMALIZED, FOLDED}

    def preserves(self, config) -> set[str]:
        return ({BATCHNORM} if not config.fold_bn else set()) | ({FLOAT32} if not config.fp16 else set())

    def configure(self, config, later: set[str]):
        return dataclasses.replace(config, fold_bn=False) if BATCHNORM in later else config

    def lost(self, config, missing, later) -> str:
        return "--fp16 works on the lossless path only; drop --prune/--target-macs/--lowrank/--quantize"

    def run(self, model, config, ctx):
        return run(model, config, ctx)

    def summary(self, report: dict) -> list[str]:
        """What each cleanup rule did, and what was left unfolded."""
        rules = report.get("rules") or {}
        lines = ["  cleanup: " + ", ".join(f"{name} {count}" for name, count in rules.items())] if rules else []
        notes = (report.get("left_unfolded_size") or [])[:3] + (report.get("fold_errors") or [])[:3]
        return lines + [f"  not folded: {note}" for note in notes]


def default_size_threshold(model: onnx.ModelProto) -> int:
    """Twice the model (a fold may not more than triple the file), within [64 MiB, 1 GiB]."""
    return int(min(GIB, max(64 * 2**20, 2 * (size_upper_bound(model) + ondisk.disk_bytes(model)))))


def run(model: onnx.ModelProto, config: CleanupConfig | None = None, ctx: Context | None = None) -> PassResult:
    config = config or CleanupConfig()
    threshold = config.size_threshold if config.size_threshold is not None else default_size_threshold(model)
    nodes_before = len(model.graph.node)
    current, folding = fold(model, threshold)
    notes = list(folding.errors)
    try:
        model_out, rules = _graph_steps(current, model, config, threshold, folding)
    except Exception as err:  # onnx-graphsurgeon cannot import or export some graphs (optional types in subgraphs)
        notes.append(f"graph rewrites after folding skipped ({type(err).__name__}: {str(err)[:120]})")
        model_out, rules = current, {}
        name_nodes(model_out.graph)
    rules = {"constant_folding": folding.folded_nodes, "dead_nodes_removed": folding.dead_nodes,
             "functions_inlined": folding.inlined_functions, "constants_to_initializers": folding.constants_lifted,
             "static_shape_reads": folding.shape_reads, **rules}
    rules["identity_removed"] = max(0, folding.passthrough) + rules.get("identity_removed", 0)
    report = {"nodes_before": nodes_before, "nodes_after": len(model_out.graph.node), "size_threshold": threshold,
              "rules": {k: v for k, v in rules.items() if v},
              # kept for readers of the reports before the "rules" section
              **{k: rules.get(k, 0) for k in ("batchnorm_folded", "identity_removed", "reshape_shapes_made_static")}}
    if config.fp16:
        model_out, report["fp16"] = to_fp16(model_out)
        report["nodes_after"] = len(model_out.graph.node)
    if folding.too_large:
        report["left_unfolded_size"] = folding.too_large
    if notes:
        report["fold_errors"] = notes
    return PassResult(model_out, report)


def _graph_steps(current: onnx.ModelProto, model: onnx.ModelProto, config: CleanupConfig, threshold: int,
                 folding) -> tuple[onnx.ModelProto, dict]:
    """The onnx-graphsurgeon steps after folding: static Reshape shapes, Identity/Dropout, BatchNorm, the
    rewrite rules, names."""
    graph, static_reshapes = _static_reshapes(current, threshold, folding)
    rules = {"identity_removed": remove_passthrough(graph),
             "batchnorm_folded": fold_batchnorm(graph) if config.fold_bn else 0,
             "reshape_shapes_made_static": static_reshapes}
    if config.rules:
        opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        # keeping BN for the `bn` criterion also keeps it off ConvTranspose
        counts = rewrite.apply_rules(graph, skip=set() if config.fold_bn else {"convtranspose_bn"}, opset=opset)
        rules.update(counts)
        if counts and _constant_only_nodes(graph):
            # a fusion can leave constant-only nodes behind: fold again with our folder, which keeps the
            # size threshold on every intermediate tensor (onnx-graphsurgeon's fold_constants would run a
            # ConstantOfShape/Expand bomb the first fold left alone, whatever its size_threshold says)
            graph = to_graph(fold(to_model(graph, like=model), threshold)[0])
    name_nodes(graph)
    return infer_shapes(to_model(graph, like=model), inplace=True), rules


def _static_reshapes(model: onnx.ModelProto, threshold: int, folding, rounds: int = 4) -> tuple[gs.Graph, int]:
    """Make run-time computed Reshape shapes constant, fold again (a static Reshape makes the dims after it
    known, which lets the folder fold the Shape ops that read them), repeat while something changes."""
    static = 0
    for _ in range(rounds):
        if not any(n.op_type == "Reshape" for n in model.graph.node):
            break
        current = infer_shapes(model)
        graph = to_graph(current)
        made = static_reshape_shapes(graph, current)
        static += made
        if not made:
            return graph, static
        model = to_model(graph, like=model)  # drops the shape subgraphs the static shapes left dead
        if not _reads_shapes(model.graph):
            # only a Shape or Size node can fold once the dims after a Reshape are known; without one the
            # fold would change nothing (and it is the larger part of the bare command's time); nor would
            # another round: the probes pin every dynamic dim, so a Reshape made static changes none of theirs
            break
        model, more = fold(model, threshold)
        for counter in ("folded_nodes", "dead_nodes", "passthrough", "constants_lifted", "shape_reads"):
            setattr(folding, counter, getattr(folding, counter) + getattr(more, counter))
        folding.too_large = more.too_large or folding.too_large
    return to_graph(infer_shapes(model)), static


def _reads_shapes(graph: onnx.GraphProto) -> bool:
    """A Shape or Size node anywhere, subgraphs included."""
    for node in graph.node:
        if node.op_type in ("Shape", "Size") and node.domain in ("", "ai.onnx"):
            return True
        for attr in node.attribute:
            if any(_reads_shapes(g) for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)):
                return True
    return False


def _constant_only_nodes(graph: gs.Graph) -> bool:
    return any(n.inputs and all(isinstance(t, gs.Constant) or t.name == "" for t in n.inputs)
               and not n.op.startswith("Random") for n in graph.nodes)


PASS = CleanupPass()
