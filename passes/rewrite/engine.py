"""A small rewrite-rule engine over onnx-graphsurgeon graphs, in the style of onnxscript's rewriter: a rule
names the ops it anchors on, `check` looks at the structure around one anchor node and returns either a
match (a dict the rule fills) or a *reason string* saying why it does not apply, and `rewrite` performs the
replacement. Reasons are kept (capped) so a user or a test can see why a rule refused a node.

Rules run in rounds until none fires (bounded), because one rewrite often exposes another (a fused
Conv+Mul leaves a Conv+Add behind)."""
from __future__ import annotations

from dataclasses import dataclass, field

import onnx_graphsurgeon as gs

from .util import NoMatch, bypass, replace_check

MAX_REASONS = 200  # refusals kept per run: enough to debug, bounded on large models


@dataclass
class RewriteContext:
    graph: gs.Graph
    opset: int
    reasons: list[tuple[str, str, str]] = field(default_factory=list)  # (rule, node name, reason)
    _names: set | None = None

    def fresh(self, base: str) -> str:
        """A tensor name no tensor or node of the graph has: nodes may be unnamed here, so a name built from
        a node's name alone can repeat, and two tensors of one name make an invalid model."""
        if self._names is None:
            self._names = set(self.graph.tensors().keys()) | {n.name for n in self.graph.nodes}
        name, k = base, 0
        while name in self._names:
            k += 1
            name = f"{base}_{k}"
        self._names.add(name)
        return name

    def output_ids(self) -> set[int]:
        return {id(t) for t in self.graph.outputs}

    def refuse(self, rule: str, node: gs.Node | None, reason: str) -> None:
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append((rule, node.name if node is not None else "", reason))


class Rule:
    """One rewrite. Subclasses give `name` and `anchors` as class keywords and implement check/rewrite;
    graph-wide rules (CSE, weight tying) override `apply` instead."""

    name = "rule"
    anchors: tuple[str, ...] = ()

    def __init_subclass__(cls, name: str | None = None, anchors: tuple[str, ...] | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if name is not None:
            cls.name = name
        if anchors is not None:
            cls.anchors = anchors

    def check(self, node: gs.Node, ctx: RewriteContext) -> dict | str:
        raise NotImplementedError

    def rewrite(self, node: gs.Node, match: dict, ctx: RewriteContext) -> None:
        raise NotImplementedError

    def apply(self, ctx: RewriteContext) -> int:
        fired = 0
        for node in list(ctx.graph.nodes):
            # an earlier rewrite in this sweep may have detached the node
            if node.op not in self.anchors or not node.outputs or node.domain not in ("", None, "ai.onnx"):
                continue
            try:
                match = self.check(node, ctx)
            except NoMatch as refused:
                match = str(refused)
            if isinstance(match, str):
                ctx.refuse(self.name, node, match)
                continue
            self.rewrite(node, match, ctx)
            fired += 1
        return fired


class RemoveNode(Rule):
    """A rule that removes its anchor node because the node returns its first input unchanged: `why_not`
    gives the reason it may change it (or None); the output's consumers then read the input."""

    def why_not(self, node: gs.Node, ctx: RewriteContext) -> str | None:
        raise NotImplementedError

    def check(self, node, ctx):
        return self.why_not(node, ctx) or replace_check(node.outputs[0], node.inputs[0], ctx) or {}

    def rewrite(self, node, match, ctx):
        bypass(node, node.inputs[0], ctx)


def run_rules(ctx: RewriteContext, rules: list[Rule], rounds: int = 8) -> dict[str, int]:
    """Apply every rule until a round changes nothing (at most `rounds`); returns {rule name: times fired}."""
    graph = ctx.graph
    counts: dict[str, int] = {}
    for _ in range(rounds):
        changed = 0
        for rule in rules:
            fired = rule.apply(ctx)
            if fired:
                counts[rule.name] = counts.get(rule.name, 0) + fired
                changed += fired
                graph.cleanup()  # drop what the rule detached so the next rule sees live nodes only
        if not changed:
            break
    graph.cleanup().toposort()
    return counts
