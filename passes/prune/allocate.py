"""How many channels each group keeps, and which: uniform ratio, or a MACs budget met by ranking
importance across groups (global) or by one ratio for all (uniform), with aligned widths.

A plan's cost (MACs, or measured latency: latency.py) is estimated per node from its unpruned cost and
the kept fractions of its channel spaces (PlanCost), so a budget search needs no graph rewrite per step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxslim.channels import EXIT, Analysis, Group
from onnxslim.errors import SlimError


@dataclass
class Alignment:
    round_to: int = 1
    min_channels: int = 1

    def keep_count(self, group: Group, wanted: float) -> int:
        """Kept classes for a group: rounded to a multiple of round_to (never below it), at least
        min_channels and the frozen ones, at most the width."""
        n = group.n_classes
        k = int(round(wanted))
        if self.round_to > 1 and n >= self.round_to:
            k = max(self.round_to, int(round(k / self.round_to)) * self.round_to)
        k = max(k, self.min_channels, int(group.frozen.sum()), 1)
        return min(k, n)


def choose(group: Group, score: np.ndarray, keep: int) -> np.ndarray:
    """Keep the frozen classes and the `keep` best-scoring classes overall."""
    mask = group.frozen.copy()
    free = np.flatnonzero(~group.frozen)
    extra = keep - int(mask.sum())
    if extra > 0:
        best = free[np.argsort(-score[free], kind="stable")[:extra]]
        mask[best] = True
    return keep_every_space_nonempty(group, mask, score)


def keep_every_space_nonempty(group: Group, mask: np.ndarray, score: np.ndarray) -> np.ndarray:
    """A tensor with zero channels is not a model: a Concat branch or Split part that would lose all its
    channels keeps its best one."""
    for space in group.spaces:
        classes = group.class_of[space.id]
        if len(classes) and not mask[classes].any():
            mask[classes[np.argmax(score[classes])]] = True
    return mask


def uniform_plan(groups: list[Group], scores: dict, ratio: float, align: Alignment) -> dict:
    return {g.id: choose(g, scores[g.id], align.keep_count(g, g.n_classes * (1 - ratio))) for g in groups}


def node_spaces(analysis: Analysis) -> tuple[dict, dict]:
    """(tensor name -> its activation spaces, node name -> its exit spaces): what a node's cost scales with."""
    by_tensor: dict[str, list] = {}
    for (tensor, _axis), space in analysis.act_spaces.items():
        by_tensor.setdefault(tensor, []).append(space)
    exits: dict[str, list] = {}
    for space in analysis.spaces:
        if space.role == EXIT:
            exits.setdefault(space.node, []).append(space)
    return by_tensor, exits


class PlanCost:
    """Estimated cost of a plan: a constant plus, per term, its full cost x the kept fraction of each of
    the term's channel spaces. `total` is the cost of the unpruned model."""

    name, label = "cost", "cost"

    def __init__(self, analysis: Analysis, terms: list[tuple[float, list]], constant: float = 0.0):
        self.constant = float(constant)
        self.terms = [(float(base), [(analysis.group_of(s), analysis.group_of(s).class_of[s.id]) for s in spaces])
                      for base, spaces in terms]
        self.total = self.constant + sum(base for base, _ in self.terms)

    def cost(self, plan: dict) -> float:
        total = self.total
        for base, factors in self.terms:
            frac = 1.0
            for group, class_of in factors:
                mask = plan.get(group.id)
                if mask is not None:
                    frac *= self._kept(mask, class_of)
            total -= base * (1.0 - frac)
        return total

    def _kept(self, mask, class_of):
        """mask[class_of].mean(), remembered: the sensitivity steps price ~100k (mask, space) pairs, most of
        them again and again (a plan's unchanged groups)."""
        memo = self.__dict__.setdefault("_memo", {})
        key = (id(class_of), mask.dtype.str, mask.tobytes())  # class_of arrays live in self.terms: stable ids
        if key not in memo:
            if len(memo) > 200_000:
                memo.clear()
            memo[key] = mask[class_of].mean()
        return memo[key]

    def fraction(self, plan: dict) -> float:
        return self.cost(plan) / max(self.total, 1e-30)


class MacModel(PlanCost):
    """MACs of a plan: per compute node, its unpruned MACs x the kept fractions of its output channel space
    and of its contracted (exit) spaces; exact for Conv/Gemm/MatMul, so a budget search needs no graph
    rewrite per step."""

    name, label = "macs", "MACs"

    def __init__(self, analysis: Analysis, node_macs: dict[str, int]):
        by_tensor, exits = node_spaces(analysis)
        terms = []
        for node in analysis.graph.nodes:
            macs = node_macs.get(node.name)
            if macs:
                terms.append((macs, [s for t in node.outputs for s in by_tensor.get(t.name, [])] + exits.get(node.name, [])))
        super().__init__(analysis, terms)


def budget_plan(groups: list[Group], scores: dict, target: float, macs: MacModel, align: Alignment,
                method: str = "global") -> dict:
    """The plan with the most channels whose estimated MACs are <= target (a fraction of the original),
    found by bisection on one knob: the uniform ratio, or a threshold on normalized importance."""
    goal = target * macs.total
    if method == "uniform":
        plan_for = lambda r: uniform_plan(groups, scores, r, align)  # noqa: E731
    elif method == "global":
        norm = {g.id: scores[g.id] / (np.mean(scores[g.id][~g.frozen]) + 1e-12) if g.prunable else scores[g.id] for g in groups}
        plan_for = lambda r: _threshold_plan(groups, norm, r, align)  # noqa: E731
    else:
        raise SlimError(f"unknown allocation '{method}'")
    lowest = macs.cost(plan_for(1.0))
    if lowest > goal * (1 + 1e-9):
        raise SlimError(f"--target-{macs.name} {target:g} is out of reach: pruning every prunable group to its minimum "
                        f"leaves {lowest / macs.total:.3f} of the {macs.label}")
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if macs.cost(plan_for(mid)) <= goal:
            hi = mid
        else:
            lo = mid
    return plan_for(hi)


def _threshold_plan(groups, norm, level, align):
    """level in [0,1]: the fraction of all prunable classes (ranked by normalized importance) removed."""
    pool = np.concatenate([norm[g.id][~g.frozen] for g in groups]) if groups else np.zeros(0)
    if not len(pool):
        return {}
    cut = np.quantile(pool, level) if level < 1 else np.inf
    plan = {}
    for g in groups:
        keep = int(g.frozen.sum() + (norm[g.id][~g.frozen] > cut).sum())
        plan[g.id] = choose(g, norm[g.id], align.keep_count(g, keep))
    return plan
