"""Structure search in the spirit of ABCPruner / AMC: a population search over per-group pruning
intensities under the MACs budget, with the calibration loss of the refit network as fitness.

An individual is a vector r >= 0 (one entry per group); the plan prunes group g by min(max_fraction, s r_g)
of its channels, with s set by bisection so the plan just meets the budget, so every individual is feasible.
Children are log-normal mutations of the best individuals; the search stops after `time_budget` seconds.
"""
from __future__ import annotations

import time

import numpy as np

from .allocate import Alignment, MacModel, choose
from .evaluate import Evaluator
from .plan_state import plan_state

MAX_FRACTION = 0.9


def _plan(groups, scores, r, s, align):
    plan = {}
    for g, rg in zip(groups, r):
        frac = min(MAX_FRACTION, s * rg)
        plan[g.id] = choose(g, scores[g.id], align.keep_count(g, g.n_classes * (1 - frac)))
    return plan


def feasible_plan(groups, scores, r, macs: MacModel, goal: float, align: Alignment) -> dict | None:
    lo, hi = 0.0, 1.0
    while macs.cost(_plan(groups, scores, r, hi, align)) > goal and hi < 1e4:
        hi *= 2
    if macs.cost(_plan(groups, scores, r, hi, align)) > goal:
        return None
    for _ in range(30):
        mid = (lo + hi) / 2
        if macs.cost(_plan(groups, scores, r, mid, align)) <= goal:
            hi = mid
        else:
            lo = mid
    return _plan(groups, scores, r, hi, align)


def search_plan(groups, scores: dict, exits, stats, evaluator: Evaluator, macs: MacModel, align: Alignment, target: float,
                *, ridge: float, prior_rows: float = 1.0, time_budget: float, population: int = 6, seed: int = 0, progress=None,
                start: dict | None = None) -> tuple[dict, list[dict]]:
    """Returns (best plan, trace of improvements). `start` (a plan) seeds the population besides uniform."""
    rng = np.random.default_rng(seed)
    goal = target * macs.total
    deadline = time.perf_counter() + max(0.0, time_budget)

    def fitness(r):
        plan = feasible_plan(groups, scores, r, macs, goal, align)
        if plan is None:
            return np.inf, None
        return evaluator.loss(plan_state(exits, plan, stats, ridge, prior_rows)), plan

    seeds = [np.ones(len(groups))]
    if start is not None:
        seeds.append(np.array([1.0 - start[g.id].mean() + 1e-3 for g in groups]))
    pool = []
    for r in seeds:
        loss, plan = fitness(r)
        pool.append((loss, r, plan))
    trace = [{"evaluation": 0, "loss": round(float(min(p[0] for p in pool)), 6)}]
    evaluations = len(pool)
    with progress("searching", total=int(time_budget)) as bar:
        last = time.perf_counter()
        while time.perf_counter() < deadline:
            pool.sort(key=lambda p: p[0])
            parent = pool[int(rng.integers(min(len(pool), 3)))][1]
            sigma = 0.35
            child = parent * np.exp(sigma * rng.standard_normal(len(groups)) * (rng.random(len(groups)) < 0.3))
            loss, plan = fitness(child)
            evaluations += 1
            if loss < pool[0][0]:
                trace.append({"evaluation": evaluations, "loss": round(float(loss), 6)})
            pool.append((loss, child, plan))
            pool = sorted(pool, key=lambda p: p[0])[:population]
            now = time.perf_counter()
            bar.update(int(now - last))
            last = now - (now - last) % 1
    pool.sort(key=lambda p: p[0])
    trace.append({"evaluations": evaluations})
    return pool[0][2], trace
