"""Structured channel pruning: analyze channel groups, score them, allocate a budget, rewrite the graph,
and (with real calibration data) repair the network by least squares so it keeps its accuracy."""
from __future__ import annotations

import time

import numpy as np
import onnx

from onnxslim.channels import analyze_graph
from onnxslim.context import Context, PassResult
from onnxslim.cost import node_costs
from onnxslim.errors import SlimError
from onnxslim.graph import infer_shapes, to_graph
from onnxslim.protocol import BATCHNORM, FLOAT32, NORMALIZED, Pass
from onnxslim.report_text import prune_table
from onnxslim.runtime import clear_tapped

from .allocate import Alignment, MacModel, budget_plan, uniform_plan
from .apply import apply_plan
from .choose import best_of, can_choose, check_can_choose, describe
from .config import DATA_CRITERIA, PruneConfig
from .importance import WEIGHT_CRITERIA, weight_importance
from .explain import check_something_prunable
from .latency import measured_latency_model
from .calibrated import Calibrated
from .plan_state import write_weights

def run(model: onnx.ModelProto, config: PruneConfig, ctx: Context | None = None) -> PassResult:
    config.check()
    ctx = ctx or Context()
    real = ctx.calibration is not None and getattr(ctx.calibration, "real", False)
    config = config.resolved(real, can_choose(ctx.calibration))
    if config.lowrank_in_budget:  # one budget with low-rank splits: passes/joint (imported here: it imports this)
        from onnxslim.passes.joint import run as joint_run
        return joint_run(model, config, ctx)
    if config.importance == "auto":
        check_can_choose(ctx.calibration)
        return best_of(model, config, ctx, run)
    if config.importance == "bn" and not any(n.op_type == "BatchNormalization" for n in model.graph.node):
        raise SlimError("--importance bn needs BatchNormalization nodes; this model has none (BN was folded at export)")
    started = time.perf_counter()
    analysis = prune_analysis(model, config)
    notes = list(check_something_prunable(model, analysis))
    macs_model = MacModel(analysis, {c.name: c.macs or 0 for c in node_costs(model, ctx.input_shapes)})
    latency_model = None
    if config.target_latency is not None:
        with ctx.progress("profiling", total=None):
            latency_model = measured_latency_model(model, analysis, ctx.input_shapes, threads=ctx.threads or config.latency_threads)
    repair_on = wants_repair(config, real, notes)
    calibrated = None
    if config.needs_data or repair_on:
        clear_tapped()  # a session of an earlier model of the same id must not be reused
        calibrated = Calibrated(model, analysis, analysis.prunable_groups, ctx, config, real)
        if not real:
            notes.append("no real calibration data: statistics come from random inputs, accuracy claims need real data")
    scores, used = group_scores(analysis, config, calibrated, np.random.default_rng(ctx.seed))
    plan, state, allocation_trace = _plan(analysis, config, scores, latency_model or macs_model, calibrated)
    estimated = macs_model.fraction(plan)
    repair_report = calibrated.finish(plan, repair_on, start=state) if calibrated is not None else None
    pruned = apply_plan(analysis, plan, like=model)
    unrepaired = pruned
    if calibrated is not None and repair_on and calibrated.repaired_exits:
        pruned = infer_shapes(write_weights(pruned, calibrated.repaired_exits, calibrated.state, plan, analysis))
    report = {
        "importance": config.importance,
        "allocation": "uniform" if config.ratio is not None else config.allocation,
        "round_to": config.round_to,
        "estimated_macs_fraction": round(estimated, 4),
        **({"latency_model": latency_model.describe(plan)} if latency_model is not None else {}),
        "repair": bool(repair_on),
        **analysis.report(),
        "pruned_groups": pruned_groups(analysis, plan, used, repair_report, calibrated),
    }
    _finish_report(report, calibrated, repair_report, allocation_trace, notes)
    report["seconds"] = round(time.perf_counter() - started, 2)
    # the same plan without the refit: what repair is worth, at no extra cost
    return PassResult(pruned, report, extras={"unrepaired": unrepaired})


def prune_analysis(model: onnx.ModelProto, config: PruneConfig):
    """The channel groups of the model, `--exclude` checked against its node names."""
    graph = to_graph(infer_shapes(model))
    names = {n.name for n in graph.nodes}
    unknown = [e for e in config.exclude if e not in names]
    if unknown:
        raise SlimError(f"--exclude names no node of the model: {unknown}")
    return analyze_graph(graph, config.exclude)


def wants_repair(config: PruneConfig, real: bool, notes: list[str]) -> bool:
    """Whether the least-squares repair runs: asked for (default: with real data) and real data given."""
    repair_on = config.repair if config.repair is not None else real
    if repair_on and not real:
        repair_on = False
        notes.append("repair needs real calibration data (--calib); it was skipped")
    elif config.repair is None and not real and config.needs_data:
        notes.append("repair needs real calibration data (--calib); it is off")
    return repair_on


def group_scores(analysis, config: PruneConfig, calibrated, rng) -> tuple[dict, dict]:
    """({group id: channel scores}, {group id: the criterion used}): a data criterion where it has a modelled
    exit, the weight criterion (l1 for a data one) elsewhere."""
    scores, used = {}, {}
    if config.importance in DATA_CRITERIA:
        scores, used = calibrated.scores(config.importance)
    for g in analysis.prunable_groups:
        if g.id not in scores:
            scores[g.id], used[g.id] = weight_importance(analysis, g, config.importance if config.importance in WEIGHT_CRITERIA else "l1", rng)
            if config.importance in DATA_CRITERIA:
                used[g.id] = f"l1 ({config.importance} needs a modelled exit)"
    return scores, used


def _plan(analysis, config: PruneConfig, scores: dict, budget, calibrated):
    """(plan, the repair state the allocation built or None, the allocation trace or None)."""
    groups, align = analysis.prunable_groups, Alignment(config.round_to, config.min_channels)
    if config.ratio is not None:
        return uniform_plan(groups, scores, config.ratio, align), None, None
    if config.allocation in ("global", "uniform"):
        return budget_plan(groups, scores, config.target, budget, align, config.allocation), None, None
    return calibrated.allocate(config.allocation, scores, budget, align)


def pruned_groups(analysis, plan, used: dict, repair_report, calibrated) -> list[dict]:
    exit_errors = (repair_report or {}).get("exits", {})
    return [
        {"group": g.id, "before": g.n_classes, "after": int(plan[g.id].sum()), "importance": used[g.id], "trace": g.trace(),
         **({"exit_relative_error": {n: v for n, v in exit_errors.items() if calibrated.group_of_exit.get(n) == g.id}}
            if exit_errors else {})}
        for g in analysis.prunable_groups if not plan[g.id].all()
    ]


def _finish_report(report: dict, calibrated, repair_report, allocation_trace, notes: list[str]) -> None:
    if calibrated is not None:
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


class PrunePass(Pass):
    name = "prune"
    config = PruneConfig
    changes_layers = True
    preserved = frozenset({NORMALIZED, FLOAT32})

    def requires(self, config) -> set[str]:
        # the `bn` criterion reads BatchNorm's gamma: cleanup must leave BatchNormalization unfolded
        return {NORMALIZED, FLOAT32} | ({BATCHNORM} if config.importance == "bn" else set())

    def wants_calibration(self, config) -> bool:
        return config.importance in DATA_CRITERIA

    run = staticmethod(run)  # the module's run(model, config, ctx)

    def weights_on_disk(self, config) -> bool:
        return True  # reads weights through gs Constants (ondisk.DiskValues); only the pruned ones are rewritten

    def summary(self, report: dict) -> list[str]:
        frozen = report.get("frozen", [])
        lines = [f"prune: {len(report.get('pruned_groups', []))} of {report.get('groups')} channel groups pruned "
                 f"({report.get('importance')}, {report.get('allocation')}); {len(frozen)} groups (partly) frozen"]
        if report.get("importance_choice"):
            lines.append("  " + describe(report["importance_choice"]))
        latency = report.get("latency_model")
        if latency:
            lines.append(f"  latency model: {latency['estimated_fraction']:.3f} of {latency['profiled_ms']} ms profiled "
                         f"({latency['mapped_fraction']:.0%} of the kernel time mapped to nodes)")
        fidelity = report.get("fidelity") or {}
        if fidelity.get("after_repair"):
            b, a = fidelity.get("before_repair", {}), fidelity["after_repair"]
            lines.append(f"  repair on {fidelity.get('samples')} calibration samples: loss {b.get('loss')} -> {a.get('loss')}")
        if report.get("lowrank_in_budget"):  # --lowrank-in-budget: which tool was chosen where (passes/joint)
            from onnxslim.passes.joint import summary_lines
            lines += summary_lines(report["lowrank_in_budget"])
        lines += [f"  note: {note}" for note in report.get("notes") or []]
        lines += [f"  frozen {f['frozen_channels']}/{f['channels']} ch: {f['reasons'][0]}" for f in frozen[:6]]
        if len(frozen) > 6:
            lines.append(f"  ... {len(frozen) - 6} more frozen groups (see --report or `onnxslim inspect`)")
        return lines

    def details(self, report: dict) -> list[str]:
        return prune_table(report)


PASS = PrunePass()
