"""One budget for pruning cuts and low-rank splits: the prune pass's step-by-step sensitivity allocation
(passes/prune/sensitivity.py) with a second kind of candidate.

Every step starts from the current plan (groups cut, exits refit, layers split) and tries, per prunable
group not touching a split layer, the next cut (its exits refit from statistics of the current model), and
per weight MatMul/Gemm not touched by a cut group, the lower rank with the least fit error per MAC saved among
those saving at least a quarter of `step`.
A local proxy ranks each kind (exit refit error for cuts, the fit's output error for splits: different
scales, so each kind gets its own `candidates` best); those tries run through the network on the held-out
calibration samples, and the one with the least loss increase per MAC saved is taken, whichever kind.
"""
from __future__ import annotations

import numpy as np

from onnxslim.passes.prune.allocate import Alignment, MacModel, choose
from onnxslim.passes.prune.evaluate import State, exit_feeds
from onnxslim.passes.prune.exits import Exit
from onnxslim.passes.prune.sensitivity import Solves, exit_change, next_keep

from .units import JointState, SplitUnit


def _prune_tries(groups, plan, scores, by_group, state, stats, macs, align, wanted, remaining, blocked, solves):
    tries = []
    base = macs.cost(plan)
    for g in groups:
        keep_now = int(plan[g.id].sum())
        if g.id in blocked:
            continue
        k, saved = next_keep(g, keep_now, plan, base, macs, align, wanted, scores)
        if k >= keep_now or saved <= 0:
            continue
        mask = choose(g, scores[g.id], k)
        proxy = sum(solves.solved(e, mask, stats[e.node])[2] - solves.error(e, stats[e.node], state.w2[e.node], state.bias[e.node])
                    for e in by_group.get(g.id, []) if e.node in stats)
        tries.append((proxy / min(saved, remaining), "prune", g, mask, saved))
    return tries


def _split_tries(units: list[SplitUnit], splits: dict, cut: set, wanted: float, remaining: float):
    tries = []
    for u in units:
        if u.touches & cut:
            continue
        now = splits.get(u.name)
        lower = [r for r in u.ranks if now is None or r < now]
        if not lower:
            continue
        saving = {r: u.macs_at(now) - u.macs_at(r) for r in lower if u.macs_at(now) > u.macs_at(r)}
        # a layer smaller than the step (a 384x384 projection is 1.3% of MiniLM's MACs) would otherwise only
        # ever be offered at its lowest rank: offer the rank with the best proxy rate among those saving at
        # least a quarter of the step (else its largest saving)
        enough = [r for r in saving if saving[r] >= wanted / 4] or [max(saving, key=saving.get, default=None)]
        if enough == [None]:
            continue
        rate = {r: (u.error_at(r) - u.error_at(now)) / min(saving[r], remaining) for r in enough}
        rank = min(enough, key=lambda r: (rate[r], -r))
        tries.append((rate[rank], "lowrank", u, rank, saving[rank]))
    return tries


def joint_plan(groups, scores: dict, exits: list[Exit], units: list[SplitUnit], whole: dict, evaluator, collect_stats,
               macs: MacModel, align: Alignment, target: float, *, ridge: float, prior_rows: float = 1.0,
               step: float = 0.02, candidates: int = 8, progress=None):
    """Returns (plan, state with refit exits, {unit name: rank}, trace). `collect_stats(joint_state)` ->
    {exit: ExitStats} from the current model (splits included) against the original."""
    plan = {g.id: np.ones(g.n_classes, bool) for g in groups}
    by_group: dict[int, list[Exit]] = {}
    for e in exits:
        by_group.setdefault(e.group.id, []).append(e)
    by_node = {e.node: e for e in exits}
    state, splits, trace, solves = State(exits), {}, [], Solves(ridge, prior_rows)
    current = lambda: JointState(state, splits, units, whole)  # noqa: E731
    cost = lambda: macs.cost(plan) - sum(u.macs - u.macs_at(splits[u.name]) for u in units if u.name in splits)  # noqa: E731
    stats, loss_now = collect_stats(current()), evaluator.loss(current())
    goal, quantum = target * macs.total, step * macs.total
    now = cost()
    with progress("joint allocation", total=max(1, int(np.ceil((now - goal) / quantum)))) as bar:
        while now > goal * (1 + 1e-9):
            remaining = now - goal
            wanted = min(quantum, remaining)
            cut = {gid for gid, m in plan.items() if not m.all()}
            blocked = {gid for u in units if u.name in splits for gid in u.touches}
            pt = sorted(_prune_tries(groups, plan, scores, by_group, state, stats, macs, align, wanted, remaining, blocked,
                                     solves), key=lambda t: t[0])[:candidates]
            st = sorted(_split_tries(units, splits, cut, wanted, remaining), key=lambda t: t[0])[:candidates]
            if not pt and not st:
                break
            changes, overrides = [], []
            for _, kind, unit, choice, _ in pt + st:
                if kind == "prune":
                    change = exit_change(by_group.get(unit.id, []), choice, stats, solves)
                    changes.append(change)
                    overrides.append({k: v for node, (w2, b) in change.items() for k, v in exit_feeds(by_node[node], w2, b).items()})
                else:
                    changes.append(None)
                    overrides.append(unit.feeds(choice))
            losses = evaluator.losses(current(), overrides)
            rates = [(loss - loss_now) / min(t[4], remaining) for t, loss in zip(pt + st, losses)]
            i = int(np.argmin(rates))
            _, kind, unit, choice, saved = (pt + st)[i]
            if kind == "prune":
                state, plan[unit.id] = state.with_changes(changes[i]), choice
            else:
                splits[unit.name] = choice
            loss_now, now = losses[i], cost()
            trace.append({"step": len(trace) + 1, "tool": kind, **({"group": unit.id, "kept": int(choice.sum())} if kind == "prune"
                          else {"layer": unit.name, "rank": int(choice)}), "macs_fraction": round(float(now / macs.total), 4),
                          "loss": round(float(loss_now), 6)})
            bar.update(max(1, int(round(saved / quantum))))
            stats = collect_stats(current())
    return plan, state, splits, trace
