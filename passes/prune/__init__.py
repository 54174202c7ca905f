"""Structured channel pruning: analyze channel groups, score them, allocate a budget, rewrite the graph,
and (with real calibration data) repair the network by least squares so it keeps its accuracy."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxslim.channels import analyze_graph
from onnxslim.context import Context, PassResult
from onnxslim.cost import node_costs
from onnxslim.errors import SlimError
from onnxslim.graph import infer_shapes, to_graph

from .allocate import Alignment, MacModel, budget_plan, uniform_plan
from .apply import apply_plan, kept_positions
from .importance import WEIGHT_CRITERIA, weight_importance

DEFAULT_ROUND_TO = 16  # benchmarks/RESULTS.md: on onnxruntime CPU, widths rounded to 16 ran faster than 8 (and unaligned slower than unpruned)

DATA_CRITERIA = ("activation", "apoz", "hrank", "reconstruction")
ALLOCATIONS = ("global", "uniform", "sensitivity", "search")


@dataclass
class PruneConfig:
    ratio: float | None = None  # uniform fraction of channels removed in every prunable group
    target_macs: float | None = None  # or: prune until MACs <= this fraction of the original
    target_latency: float | None = None  # or: until the latency measured per node (latency.py) <= this fraction
    latency_threads: int = 1  # onnxruntime threads the latency model is profiled with (1: stable on shared cores)
    # weight: l1 | l2 | bn | random; data: activation | apoz | hrank | reconstruction; auto: with real
    # calibration data and a target, the better of l1 and reconstruction on held-out samples, rebuilt on all
    # samples (choose.py; ~3 plan builds). Not the default: its first version (winner fitted on 75% of the
    # samples) scored below both criteria on EfficientNet-Lite0 at 70% MACs (benchmarks/RESULTS.md, issue 11)
    importance: str = "l1"
    # for a target: global | uniform | sensitivity | search; None: sensitivity with real calibration data
    # (EfficientNet-Lite0 at 90% MACs: 82.6% top-1 against global's 55.9%), else global
    allocation: str | None = None
    round_to: int = DEFAULT_ROUND_TO
    min_channels: int = 1
    exclude: tuple = field(default_factory=tuple)
    # -- calibration-driven pruning and repair (need ctx.calibration; random data when absent) --
    repair: bool | None = None  # least-squares refit of the pruned groups' exits; None = on iff real data
    ridge: float = 0.05  # repair shrinkage toward the original weights, relative to the mean input energy
    repair_prior: float = 8.0  # extra shrinkage per (features / rows): strong where rows are few (Gemm, 7x7 maps)
    importance_prior: float = 8.0  # the same shrinkage for the reconstruction importance's Gram (data_importance.py)
    calib_batch: int = 8  # calibration batch size streamed through onnxruntime
    positions_per_sample: int = 256  # output positions sampled per image and exit for the Gram statistics
    residual_targets: bool = True  # a refit branch feeding a residual Add restores the sum (absorbs the skip's drift)
    repair_passes: int = 8  # data passes of the layer-by-layer repair (exits split into this many waves)
    fidelity_samples: int = 32  # calibration samples the allocation's loss and the fidelity report use
    search_time: float = 60.0  # seconds for allocation=search
    sensitivity_step: float = 0.02  # fraction of the total MACs removed per sensitivity step
    sensitivity_candidates: int = 8  # tries per sensitivity step measured through the network (4 -> 8: 69.9 -> 73.3% at 80% MACs)

    def resolved(self, real_data: bool) -> "PruneConfig":
        """This config with the default allocation (see `allocation`) made concrete."""
        data_driven = real_data and self.target is not None
        config = self
        if config.allocation is not None:
            return config
        return dataclasses.replace(config, allocation="sensitivity" if data_driven else "global")

    def check(self) -> None:
        if sum(x is not None for x in (self.ratio, self.target_macs, self.target_latency)) != 1:
            raise SlimError("give exactly one of --prune RATIO, --target-macs FRACTION or --target-latency FRACTION")
        if self.ratio is not None and not 0 <= self.ratio < 1:
            raise SlimError(f"--prune {self.ratio:g}: the ratio must be in [0, 1)")
        if self.target_macs is not None and not 0 < self.target_macs <= 1:
            raise SlimError(f"--target-macs {self.target_macs:g}: the fraction must be in (0, 1]")
        if self.target_latency is not None and not 0 < self.target_latency <= 1:
            raise SlimError(f"--target-latency {self.target_latency:g}: the fraction must be in (0, 1]")
        if self.importance not in WEIGHT_CRITERIA + DATA_CRITERIA + ("auto",):
            raise SlimError(f"unknown importance '{self.importance}' (choose from {', '.join(WEIGHT_CRITERIA + DATA_CRITERIA)}, auto)")
        if self.importance == "auto" and self.target is None:
            raise SlimError("--importance auto needs --target-macs or --target-latency (it compares plans at one budget)")
        if self.allocation is not None and self.allocation not in ALLOCATIONS:
            raise SlimError(f"unknown allocation '{self.allocation}' (choose from {', '.join(ALLOCATIONS)})")
        if self.allocation in ("sensitivity", "search") and self.target is None:
            raise SlimError(f"--allocation {self.allocation} needs --target-macs or --target-latency")
        if self.round_to < 1 or self.min_channels < 1:
            raise SlimError("--round-to and --min-channels must be >= 1")
        if self.ridge < 0 or self.repair_prior < 0 or self.calib_batch < 1 or self.positions_per_sample < 1 or self.repair_passes < 1 or self.fidelity_samples < 1:
            raise SlimError("--ridge and --repair-prior must be >= 0; batch, positions, passes and fidelity samples must be >= 1")
        if self.search_time < 0 or not 0 < self.sensitivity_step < 1 or self.sensitivity_candidates < 1:
            raise SlimError("--search-time must be >= 0, the sensitivity step in (0, 1), candidates >= 1")

    @property
    def target(self) -> float | None:
        return self.target_macs if self.target_macs is not None else self.target_latency

    @property
    def needs_data(self) -> bool:
        return self.importance in DATA_CRITERIA or self.allocation in ("sensitivity", "search") or bool(self.repair)


def run(model: onnx.ModelProto, config: PruneConfig, ctx: Context | None = None) -> PassResult:
    config.check()
    ctx = ctx or Context()
    real = ctx.calibration is not None and getattr(ctx.calibration, "real", False)
    config = config.resolved(real)
    if config.importance == "auto":
        from .choose import best_of, check_can_choose
        check_can_choose(ctx.calibration)
        return best_of(model, config, ctx, run)
    if config.importance == "bn" and not any(n.op_type == "BatchNormalization" for n in model.graph.node):
        raise SlimError("--importance bn needs BatchNormalization nodes; this model has none (BN was folded at export)")
    started = time.perf_counter()
    graph = to_graph(infer_shapes(model))
    names = {n.name for n in graph.nodes}
    unknown = [e for e in config.exclude if e not in names]
    if unknown:
        raise SlimError(f"--exclude names no node of the model: {unknown}")
    analysis = analyze_graph(graph, config.exclude)
    from .explain import check_something_prunable
    nothing_notes = check_something_prunable(model, analysis)
    groups = analysis.prunable_groups
    rng = np.random.default_rng(ctx.seed)
    align = Alignment(config.round_to, config.min_channels)
    macs_model = MacModel(analysis, {c.name: c.macs or 0 for c in node_costs(model, ctx.input_shapes)})
    latency_model = None
    if config.target_latency is not None:
        from .latency import measured_latency_model
        with ctx.progress("profiling", total=None):
            latency_model = measured_latency_model(model, analysis, ctx.input_shapes, threads=ctx.threads or config.latency_threads)
    budget = latency_model or macs_model
    repair_on = config.repair if config.repair is not None else real
    notes = list(nothing_notes)
    if repair_on and not real:
        repair_on = False
        notes.append("repair needs real calibration data (--calib); it was skipped")
    elif config.repair is None and not real and config.needs_data:
        notes.append("repair needs real calibration data (--calib); it is off")
    calibrated = None
    if config.needs_data or repair_on:
        from .calibrated import Calibrated
        from onnxslim.runtime import clear_tapped
        clear_tapped()  # a session of an earlier model of the same id must not be reused
        calibrated = Calibrated(model, analysis, groups, ctx, config, real)
        if not real:
            notes.append("no real calibration data: statistics come from random inputs, accuracy claims need real data")
    scores, used = {}, {}
    if config.importance in DATA_CRITERIA:
        scores, used = calibrated.scores(config.importance)
    for g in groups:
        if g.id not in scores:
            scores[g.id], used[g.id] = weight_importance(analysis, g, config.importance if config.importance in WEIGHT_CRITERIA else "l1", rng)
            if config.importance in DATA_CRITERIA:
                used[g.id] = f"l1 ({config.importance} needs a modelled exit)"
    state = None
    allocation_trace = None
    if config.ratio is not None:
        plan = uniform_plan(groups, scores, config.ratio, align)
    elif config.allocation in ("global", "uniform"):
        plan = budget_plan(groups, scores, config.target, budget, align, config.allocation)
    else:
        plan, state, allocation_trace = calibrated.allocate(config.allocation, scores, budget, align)
    estimated = macs_model.fraction(plan)
    repair_report = None
    if calibrated is not None:
        repair_report = calibrated.finish(plan, repair_on, start=state)
    keep_positions = kept_positions(analysis, plan)
    pruned = apply_plan(analysis, plan, like=model)
    unrepaired = pruned
    if calibrated is not None and repair_on and calibrated.repaired_exits:
        from .plan_state import write_weights
        pruned = infer_shapes(write_weights(pruned, calibrated.repaired_exits, calibrated.state, plan, keep_positions))
    exit_errors = (repair_report or {}).get("exits", {})
    report = {
        "importance": config.importance,
        "allocation": "uniform" if config.ratio is not None else config.allocation,
        "round_to": config.round_to,
        "estimated_macs_fraction": round(estimated, 4),
        **({"latency_model": latency_model.describe(plan)} if latency_model is not None else {}),
        "repair": bool(repair_on),
        **analysis.report(),
        "pruned_groups": [
            {"group": g.id, "before": g.n_classes, "after": int(plan[g.id].sum()), "importance": used[g.id], "trace": g.trace(),
             **({"exit_relative_error": {n: v for n, v in exit_errors.items() if calibrated.group_of_exit.get(n) == g.id}}
                if exit_errors else {})}
            for g in groups if not plan[g.id].all()
        ],
    }
    if calibrated is not None:
        from onnxslim.runtime import clear_tapped
        clear_tapped()
        report["calibration"] = calibrated.describe()
        if repair_report is not None:
            report["fidelity"] = repair_report["fidelity"]
            if repair_report.get("skipped_exits"):
                report["unrepaired_exits"] = repair_report["skipped_exits"]
    if allocation_trace is not None:
        report["allocation_trace"] = allocation_trace
    if notes:
        report["notes"] = notes
    report["seconds"] = round(time.perf_counter() - started, 2)
    # the same plan without the refit: what repair is worth, at no extra cost
    return PassResult(pruned, report, extras={"unrepaired": unrepaired})
