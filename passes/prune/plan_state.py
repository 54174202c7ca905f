"""Turning a keep plan into exit weights: zero the removed features (the masked model) and, optionally,
refit the pruned groups' exits from accumulated statistics (one solve each, no data pass)."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.graph import to_graph, to_model

from .apply import kept_positions
from .evaluate import State
from .exits import Exit
from .repair import ExitStats, solve


def pruned_exits(exits: list[Exit], plan: dict) -> list[Exit]:
    return [e for e in exits if e.group.id in plan and not plan[e.group.id].all()]


def set_group(state: State, exits: list[Exit], mask: np.ndarray, stats: dict[str, ExitStats] | None, ridge: float,
              prior_rows: float = 1.0) -> None:
    """Give `exits` (of one group) the keep mask: refit from `stats` when given, else zero the removed columns
    of the original weights."""
    for e in exits:
        keep = e.features_of(mask)
        if stats is not None and e.node in stats:
            state.w2[e.node], state.bias[e.node] = solve(e, stats[e.node], keep, ridge, prior_rows=prior_rows)
        else:
            state.w2[e.node], state.bias[e.node] = masked_weights(e, keep)


def masked_weights(e: Exit, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The exit's original (w2, bias) with the features outside `keep` zeroed."""
    w2 = np.zeros_like(e.w2)
    w2[:, keep] = e.w2[:, keep]
    return w2, e.bias.astype(np.float64).copy() if e.bias is not None else np.zeros(e.w2.shape[0])


def plan_state(exits: list[Exit], plan: dict, stats: dict[str, ExitStats] | None = None, ridge: float = 1e-2,
               prior_rows: float = 1.0) -> State:
    state = State(exits)
    by_group: dict[int, list[Exit]] = {}
    for e in pruned_exits(exits, plan):
        by_group.setdefault(e.group.id, []).append(e)
    for gid, group_exits in by_group.items():
        set_group(state, group_exits, plan[gid], stats, ridge, prior_rows)
    return state


def write_weights(pruned_model, exits: list[Exit], state: State, plan: dict, analysis):
    """Put `state`'s refit weights of `exits` into the pruned model (nodes keep their names through
    apply_plan), sliced to the kept inputs and, when the exit's output channels were pruned too, outputs."""
    positions = kept_positions(analysis, plan)
    graph = to_graph(pruned_model)
    nodes = {n.name: n for n in graph.nodes}
    for e in exits:
        node = nodes[e.node]
        keep_in = e.kept(plan)
        keep_out = positions.get(e.source_space, np.arange(e.w2.shape[0])) if e.source_space is not None else np.arange(e.w2.shape[0])
        w2 = state.w2[e.node][np.ix_(keep_out, keep_in)]
        weight = e.to_weight(w2, (len(keep_out), -1, *e.kernel) if e.op == "conv" else (-1, len(keep_out)))
        dtype = node.inputs[1].values.dtype
        node.inputs[1] = gs.Constant(f"{e.node}__repaired_w", np.ascontiguousarray(weight.astype(dtype)))
        if e.has_bias:
            bias = state.bias[e.node][keep_out].astype(dtype)
            constant = gs.Constant(f"{e.node}__repaired_b", np.ascontiguousarray(bias))
            if e.bias_add is not None:
                nodes[e.bias_add[0]].inputs[e.bias_add[1]] = constant
            elif len(node.inputs) > 2 and node.inputs[2].name:
                node.inputs[2] = constant
            else:
                while len(node.inputs) < 2:
                    node.inputs.append(gs.Variable.empty())
                node.inputs.append(constant)
    return to_model(graph, like=pruned_model)
