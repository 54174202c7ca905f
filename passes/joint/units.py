"""Low-rank splits as units of the prune pass's budget: per weight MatMul/Gemm, "split at rank r" with its
MACs and its data-aware factors (passes/lowrank: the layer projected onto the top directions of its output
on calibration data, the mean shift put into the bias; Q/K in the attention-logit metric), and a model where
every candidate's weights are graph inputs, so a split is evaluated like a pruning cut: by feeding weights."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxslim.channels import Analysis
from onnxslim.runtime import weights_as_inputs
from onnxslim.passes.lowrank import attention, factor
from onnxslim.passes.lowrank.layers import Layer, find_layers
from onnxslim.passes.lowrank.select import candidate_ranks
from onnxslim.passes.lowrank.stats import find_token_mask, layer_shapes, original_stats
from onnxslim.passes.prune.allocate import node_spaces
from onnxslim.passes.prune.evaluate import State, bias_name, parametric_model, weight_name
from onnxslim.passes.prune.exits import Exit


@dataclass(eq=False)
class SplitUnit:
    layer: Layer
    stats: object            # lowrank OutputStats of the layer's output on the original model
    fit: object              # its reduced-rank fit (errors per rank, factors)
    rows: int                # output rows per sample: the node's MACs are rows * in * out
    touches: frozenset       # prunable group ids whose cut changes this node (it is then not split)
    ranks: list = field(default_factory=list)  # ranks that save MACs, ascending
    names: tuple = ("", None)  # (weight input, bias input or None) in the joint model
    _fed: dict = field(default_factory=dict)  # the last two ranks' feeds: the split as made and the one tried

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def macs(self) -> int:
        return self.rows * self.layer.in_features * self.layer.out_features

    def macs_at(self, rank: int | None) -> int:
        """MACs of the node (rank None) or of its two factors x A [in, r], (x A) B [r, out]."""
        return self.macs if rank is None else self.rows * rank * (self.layer.in_features + self.layer.out_features)

    def error_at(self, rank: int | None) -> float:
        """The fit's relative output error on the calibration data (in the attention metric for Q/K)."""
        return 0.0 if rank is None else float(self.fit.errors[min(rank, len(self.fit.errors) - 1)])

    def factors(self, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(A [in, r], B [r, out], bias or None) with y ~ x A B + bias."""
        left, right, shift = factor.projection_at(self.fit, self.stats, rank)
        a, b = factor.output_space_factors(self.layer.weight, left, right)
        return a, b, None if self.layer.bias is None else self.layer.bias + shift

    def feeds(self, rank: int | None) -> dict:
        """The joint model's inputs for this node whole (None) or split at `rank` (the product A B); every
        evaluation of a state feeds every split made, so the last two ranks' arrays are kept."""
        if rank not in self._fed:
            self._fed[rank] = self._feeds(rank)
            while len(self._fed) > 2:
                del self._fed[next(iter(self._fed))]
        return self._fed[rank]

    def _feeds(self, rank: int | None) -> dict:
        if rank is None:
            w, bias = self.layer.weight, self.layer.bias
        else:
            a, b, bias = self.factors(rank)
            w = a @ b
        transposed = self.layer.kind == "gemm" and self.layer.attrs.get("transB", 0)
        out = {self.names[0]: np.ascontiguousarray((w.T if transposed else w), dtype=np.float32)}
        if self.names[1] is not None:
            out[self.names[1]] = np.asarray(bias, dtype=np.float32)
        return out


def _usable(layer: Layer) -> bool:
    """Plain y = x W (+ b): a Gemm with alpha = beta = 1, a bias of one axis (fed as a [out] input)."""
    if layer.kind == "gemm" and (layer.attrs.get("alpha", 1.0) != 1.0 or layer.attrs.get("beta", 1.0) != 1.0
                                 or layer.attrs.get("transA", 0)):
        return False
    return layer.bias is None or np.asarray(layer.bias).ndim == 1


def touched_groups(analysis: Analysis) -> dict[str, frozenset]:
    """{node: prunable group ids of its output or contracted channels}: a cut of one changes the node."""
    by_tensor, exits = node_spaces(analysis)
    prunable = {g.id for g in analysis.prunable_groups}
    out = {}
    for node in analysis.graph.nodes:
        spaces = [s for t in node.outputs for s in by_tensor.get(t.name, [])] + exits.get(node.name, [])
        out[node.name] = frozenset(analysis.group_of(s).id for s in spaces) & prunable
    return out


def find_units(model: onnx.ModelProto, analysis: Analysis, node_macs: dict, calib, ctx, exclude, *,
               round_to: int = 8, ridge: float = 1.0, batch_size: int = 16, progress=None) -> list[SplitUnit]:
    """Every weight MatMul/Gemm a split at some rank makes cheaper, with its data-aware fit."""
    layers, _ = find_layers(model, {"matmul", "gemm"}, set(exclude))
    layers = [layer for layer in layers if _usable(layer) and node_macs.get(layer.name)]
    if not layers:
        return []
    probe, _ = layer_shapes(model, layers, calib, ctx, batch_size)
    mask = find_token_mask(model, "auto")
    n = -(-len(calib) // batch_size)
    with progress("low-rank statistics", total=n) as bar:
        stats = original_stats(model, layers, calib.batches(batch_size), mask, bar)
    attention.attach_metrics(stats, attention.head_layouts(model, attention.find_pairs(model, layers), probe))
    touched = touched_groups(analysis)
    units = []
    for layer in layers:
        rows = node_macs[layer.name] // (layer.in_features * layer.out_features)
        unit = SplitUnit(layer, stats[layer.name], factor.reduced_rank_fit(stats[layer.name], ridge), rows,
                         touched.get(layer.name, frozenset()))
        full = min(layer.in_features, layer.out_features)
        unit.ranks = [r for r in candidate_ranks(full, round_to) if unit.macs_at(r) < unit.macs]
        if unit.ranks:
            units.append(unit)
    return units


def joint_model(model: onnx.ModelProto, exits: list[Exit], units: list[SplitUnit]) -> onnx.ModelProto:
    """The prune pass's parametric model (exit weights as inputs) with every unit's weight and bias as
    inputs too; sets each unit's input names (an exit's own where the node is an exit)."""
    by_node = {e.node: e for e in exits}
    slots: dict[str, dict] = {}
    for u in units:
        e = by_node.get(u.name)
        if e is not None:
            u.names = (weight_name(e), bias_name(e) if e.has_bias else None)
            continue
        node = u.layer.node
        u.names = (f"slim::lw::{u.name}", None if u.layer.bias is None else f"slim::lb::{u.name}")
        w = u.feeds(None)  # for the input shapes
        slots.setdefault(node.output[0], {})[1] = (u.names[0], onnx.TensorProto.FLOAT, list(w[u.names[0]].shape))
        if u.names[1] is not None:
            bias_slot = (u.names[1], onnx.TensorProto.FLOAT, [u.layer.out_features])
            if u.layer.kind == "gemm":
                slots[node.output[0]][2] = bias_slot
            else:
                add = u.layer.bias_add
                slots.setdefault(add.output[0], {})[1 if add.input[0] == node.output[0] else 0] = bias_slot
    return weights_as_inputs(parametric_model(model, exits), slots)


class JointState:
    """The prune pass's State (exit weights) plus {unit name: rank} of the splits made; feeds() gives every
    input of the joint model."""

    def __init__(self, state: State, splits: dict, units: list[SplitUnit], whole: dict):
        self.state, self.splits, self.units, self.whole = state, splits, units, whole

    def feeds(self) -> dict:
        out = {**self.whole, **self.state.feeds()}
        by_name = {u.name: u for u in self.units}
        for name, rank in self.splits.items():
            out.update(by_name[name].feeds(rank))
        return out


def whole_feeds(units: list[SplitUnit], exits: list[Exit]) -> dict:
    """The original weights of the units that are not exits (exits come from the State)."""
    nodes = {e.node for e in exits}
    out = {}
    for u in units:
        if u.name not in nodes:
            out.update(u.feeds(None))
    return out
