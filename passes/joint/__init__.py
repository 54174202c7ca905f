"""Heads, FFN features (any prunable channel group) and low-rank splits under one MACs budget: the prune
pass with `--lowrank-in-budget`. Per step the allocation takes a pruning cut or a split, whichever costs
the least calibration loss per MAC saved (allocate.py); the report says which tool was chosen where."""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import onnx

from onnxslim.context import Context, PassResult
from onnxslim.cost import node_costs
from onnxslim.errors import SlimError
from onnxslim.graph import infer_shapes
from onnxslim.runtime import clear_tapped
from onnxslim.passes.lowrank.rewrite import Editor
from onnxslim.passes.prune.allocate import Alignment, MacModel
from onnxslim.passes.prune.apply import apply_plan
from onnxslim.passes.prune.calibrated import Calibrated
from onnxslim.passes.prune.plan_state import pruned_exits, write_weights
from onnxslim.passes.prune.repair import collect

from .allocate import joint_plan
from .evaluate import JointEvaluator, joint_repair
from .units import JointState, find_units, joint_model, whole_feeds


def run(model: onnx.ModelProto, config, ctx: Context) -> PassResult:
    """The prune pass's run with low-rank splits in its budget (config: a resolved PruneConfig)."""
    from onnxslim.passes.prune import group_scores, prune_analysis, pruned_groups, wants_repair  # the prune pass imports us lazily
    real = ctx.calibration is not None and getattr(ctx.calibration, "real", False)
    if config.target_macs is None:
        raise SlimError("--lowrank-in-budget needs --target-macs (a split's latency is not modelled yet)")
    if not real:
        raise SlimError("--lowrank-in-budget needs real calibration data (--calib): splits and cuts are chosen by measured loss")
    # the allocation measures every step; `auto` would run it three times
    importance = "reconstruction" if config.importance in (None, "auto") else config.importance
    config = dataclasses.replace(config, importance=importance, allocation="sensitivity")
    started = time.perf_counter()
    analysis = prune_analysis(model, config)
    node_macs = {c.name: c.macs or 0 for c in node_costs(model, ctx.input_shapes)}
    macs = MacModel(analysis, node_macs)
    notes = []
    repair_on = wants_repair(config, real, notes)
    clear_tapped()
    calibrated = Calibrated(model, analysis, analysis.prunable_groups, ctx, config, real)
    scores, used = group_scores(analysis, config, calibrated, np.random.default_rng(ctx.seed))
    units = find_units(model, analysis, node_macs, ctx.calibration, ctx, config.exclude, progress=ctx.progress)
    joint = joint_model(model, calibrated.exits, units)
    whole = whole_feeds(units, calibrated.exits)
    evaluator = JointEvaluator(model, joint, calibrated.subset())

    def stats_for(current):
        batches, n = calibrated._fit_batches()
        with ctx.progress("calibrating", total=n) as bar:
            calibrated.passes += 1
            return collect(model, joint, calibrated.exits, current, batches, per_sample=config.positions_per_sample,
                           seed=ctx.seed, progress=bar, residual=config.residual_targets)
    plan, state, splits, trace = joint_plan(
        analysis.prunable_groups, scores, calibrated.exits, units, whole, evaluator, stats_for, macs,
        Alignment(config.round_to, config.min_channels), config.target_macs, ridge=config.ridge, prior_rows=config.repair_prior,
        step=config.sensitivity_step, candidates=config.sensitivity_candidates, progress=ctx.progress)
    current = JointState(state, splits, units, whole)
    fidelity = {"samples": sum(len(next(iter(b.values()))) for b in evaluator.batches), "before_repair": evaluator.fidelity(current)}
    targets = pruned_exits(calibrated.exits, plan) if repair_on else []
    if targets:
        fidelity["repair_waves"] = joint_repair(model, joint, targets, plan, current, calibrated.dataset, config, ctx.seed,
                                                evaluator.loss, ctx.progress)
        fidelity["after_repair"] = evaluator.fidelity(current)
    pruned = apply_plan(analysis, plan, like=model)
    unrepaired = infer_shapes(apply_splits(pruned, units, splits))
    written = infer_shapes(apply_splits(write_weights(pruned, targets, state, plan, analysis), units, splits)) if targets else unrepaired
    cost = macs.cost(plan) - sum(u.macs - u.macs_at(splits[u.name]) for u in units if u.name in splits)
    report = {"importance": config.importance, "allocation": "sensitivity, low-rank splits in the budget", "round_to": config.round_to,
              "estimated_macs_fraction": round(cost / macs.total, 4), "repair": bool(targets), **analysis.report(),
              "pruned_groups": pruned_groups(analysis, plan, used, None, calibrated),
              "lowrank_in_budget": choices(analysis, plan, units, splits, macs.total, cost),
              "fidelity": fidelity, "allocation_trace": trace, "calibration": calibrated.describe()}
    clear_tapped()
    if notes:
        report["notes"] = notes
    report["seconds"] = round(time.perf_counter() - started, 2)
    return PassResult(written, report, extras={"unrepaired": unrepaired})


def apply_splits(model: onnx.ModelProto, units, splits: dict) -> onnx.ModelProto:
    """Each split layer as x A then (x A) B (+ bias), the factors the allocation evaluated (passes/lowrank)."""
    if not splits:
        return model
    editor = Editor(model)
    for u in units:
        if u.name in splits:
            a, b, bias = u.factors(splits[u.name])
            editor.split_matmul(u.layer, a, b, bias, np.float32)
    return editor.finish()


def choices(analysis, plan: dict, units, splits: dict, total: float, cost: float) -> dict:
    """Which tool was chosen where: cut groups (heads when a class spans several channels) and split layers."""
    cut = []
    for g in analysis.prunable_groups:
        if not plan[g.id].all():
            cut.append({"tool": "heads" if g.channels > g.n_classes else "channels", "group": g.id, "before": g.n_classes,
                        "after": int(plan[g.id].sum()), "trace": g.trace()})
    split = [{"tool": "lowrank", "layer": u.name, "rank": int(splits[u.name]), "in": u.layer.in_features, "out": u.layer.out_features,
              "macs_before": int(u.macs), "macs_after": int(u.macs_at(splits[u.name])), "fit_error": round(u.error_at(splits[u.name]), 5)}
             for u in units if u.name in splits]
    return {"macs_before": int(round(total)), "macs_after": int(round(cost)), "candidate_layers": len(units),
            "cut_groups": cut, "splits": split}


def summary_lines(chosen: dict, limit: int = 12) -> list[str]:
    """The terminal's lines for the choices: counts, then each cut group and split layer."""
    cuts, splits = chosen["cut_groups"], chosen["splits"]
    heads = sum(c["tool"] == "heads" for c in cuts)
    lines = [f"  one budget: {heads} head groups and {len(cuts) - heads} channel groups cut, {len(splits)} of "
             f"{chosen['candidate_layers']} weight MatMul/Gemm layers split; MACs {chosen['macs_before']} -> {chosen['macs_after']}"]
    items = [f"  {c['tool']} {c['before']} -> {c['after']}: {c['trace'].split(' => ')[0]}" for c in cuts]
    items += [f"  lowrank rank {s['rank']} ({s['in']}x{s['out']}): {s['layer']}" for s in splits]
    return lines + items[:limit] + ([f"  ... {len(items) - limit} more (see --report)"] if len(items) > limit else [])
