"""Structured channel pruning: analyze channel groups, score them, allocate a budget, rewrite the graph."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxslim.channels import analyze_graph
from onnxslim.context import Context, PassResult
from onnxslim.cost import node_costs
from onnxslim.errors import SlimError
from onnxslim.graph import infer_shapes, to_graph

from .allocate import Alignment, MacModel, budget_plan, uniform_plan
from .apply import apply_plan
from .importance import WEIGHT_CRITERIA, weight_importance

DEFAULT_ROUND_TO = 8  # see benchmarks/RESULTS.md: unaligned widths run slower on onnxruntime CPU


@dataclass
class PruneConfig:
    ratio: float | None = None  # uniform fraction of channels removed in every prunable group
    target_macs: float | None = None  # or: prune until MACs <= this fraction of the original
    importance: str = "l1"
    allocation: str = "global"  # for target_macs: global | uniform
    round_to: int = DEFAULT_ROUND_TO
    min_channels: int = 1
    exclude: tuple = field(default_factory=tuple)

    def check(self) -> None:
        if (self.ratio is None) == (self.target_macs is None):
            raise SlimError("give exactly one of --prune RATIO or --target-macs FRACTION")
        if self.ratio is not None and not 0 <= self.ratio < 1:
            raise SlimError(f"--prune {self.ratio:g}: the ratio must be in [0, 1)")
        if self.target_macs is not None and not 0 < self.target_macs <= 1:
            raise SlimError(f"--target-macs {self.target_macs:g}: the fraction must be in (0, 1]")
        if self.importance not in WEIGHT_CRITERIA:
            raise SlimError(f"unknown importance '{self.importance}' (choose from {', '.join(WEIGHT_CRITERIA)})")
        if self.round_to < 1 or self.min_channels < 1:
            raise SlimError("--round-to and --min-channels must be >= 1")


def run(model: onnx.ModelProto, config: PruneConfig, ctx: Context | None = None) -> PassResult:
    config.check()
    ctx = ctx or Context()
    if config.importance == "bn" and not any(n.op_type == "BatchNormalization" for n in model.graph.node):
        raise SlimError("--importance bn needs BatchNormalization nodes; this model has none (BN was folded at export)")
    graph = to_graph(infer_shapes(model))
    names = {n.name for n in graph.nodes}
    unknown = [e for e in config.exclude if e not in names]
    if unknown:
        raise SlimError(f"--exclude names no node of the model: {unknown}")
    analysis = analyze_graph(graph, config.exclude)
    groups = analysis.prunable_groups
    rng = np.random.default_rng(ctx.seed)
    scores, used = {}, {}
    for g in groups:
        scores[g.id], used[g.id] = weight_importance(analysis, g, config.importance, rng)
    align = Alignment(config.round_to, config.min_channels)
    macs_model = MacModel(analysis, {c.name: c.macs or 0 for c in node_costs(model, ctx.input_shapes)})
    if config.ratio is not None:
        plan = uniform_plan(groups, scores, config.ratio, align)
    else:
        plan = budget_plan(groups, scores, config.target_macs, macs_model, align, config.allocation)
    estimated = macs_model.macs(plan) / max(macs_model.total, 1.0)
    pruned = apply_plan(analysis, plan, like=model)
    report = {
        "importance": config.importance,
        "allocation": "uniform" if config.ratio is not None else config.allocation,
        "round_to": config.round_to,
        "estimated_macs_fraction": round(estimated, 4),
        **analysis.report(),
        "pruned_groups": [
            {"group": g.id, "before": g.n_classes, "after": int(plan[g.id].sum()), "importance": used[g.id], "trace": g.trace()}
            for g in groups if not plan[g.id].all()
        ],
    }
    return PassResult(pruned, report)
