"""Shapes and output statistics of the candidate layers, streamed from onnxruntime batch by batch."""
from __future__ import annotations

import numpy as np
import onnx

from onnxslim import linear
from onnxslim.activations import CrossGramAccumulator, GramAccumulator
from onnxslim.inputs import model_inputs
from onnxslim.runtime import TensorTap

from .factor import OutputStats, PatchStats
from .layers import Layer
from onnxslim.cost import inferred_shapes
from onnxslim.errors import SlimError
from onnxslim.inputs import random_feeds


def find_token_mask(model: onnx.ModelProto, setting: str | None) -> str | None:
    """The input whose zeros mark positions to ignore (padding tokens), or None.

    "auto" picks a 2-D integer/bool input with "mask" in its name (a transformer's attention_mask).
    """
    if not setting:
        return None
    specs = {s.name: s for s in model_inputs(model)}
    if setting != "auto":
        return setting if setting in specs else None
    for spec in specs.values():
        if "mask" in spec.name.lower() and len(spec.shape) == 2 and (np.issubdtype(spec.dtype, np.integer) or spec.dtype == np.bool_):
            return spec.name
    return None


def _row_weights(layer: Layer, array: np.ndarray, feed: dict, mask_name: str | None):
    """Per-position weights for the layer's output rows: the token mask when its shape matches."""
    if mask_name is None or layer.feature_axis not in (-1, array.ndim - 1):
        return None
    mask = feed.get(mask_name)
    if mask is None or tuple(array.shape[:-1]) != tuple(mask.shape):
        return None
    return mask.astype(np.float64)


def _drop_masked(arrays: list[np.ndarray], weights: np.ndarray | None) -> tuple[list[np.ndarray], np.ndarray | None]:
    """The rows of weight 0 (padding tokens) removed: they add nothing to the moments, and the shared MiniLM
    calibration sentences fill about a quarter of their 64 positions. Shapes keep their rank, features last."""
    if weights is None:
        return arrays, None
    keep = weights.reshape(-1) > 0
    lead = (1,) * (arrays[0].ndim - 2)
    return ([a.reshape(-1, a.shape[-1])[keep].reshape(*lead, -1, a.shape[-1]) for a in arrays],
            weights.reshape(-1)[keep].reshape(*lead, -1))


def _pre_bias(layer: Layer, array: np.ndarray) -> np.ndarray:
    if not layer.bias_in_output:
        return array
    shape = [1] * array.ndim
    shape[layer.feature_axis] = -1
    return array - layer.bias.reshape(shape)


def probe_shapes(model: onnx.ModelProto, layers: list[Layer], feed: dict) -> dict[str, dict]:
    """Per layer: per-sample input and output shapes measured on one batch (batch axis dropped)."""
    names = [n for layer in layers for n in (layer.node.input[0], layer.out_tensor)]
    values = TensorTap(model, names, hand_over=True)(feed)
    batch = int(next(iter(feed.values())).shape[0])
    shapes = {}
    for layer in layers:
        x, y = values[layer.node.input[0]], values[layer.out_tensor]
        shapes[layer.name] = {"input": tuple(x.shape), "output": tuple(y.shape), "batch": batch}
    return shapes


def layer_shapes(model: onnx.ModelProto, layers: list[Layer], calib, ctx, batch_size: int):
    """(probe feed or None, per-layer shapes). The probe is a calibration batch, else random inputs at the run
    shapes; when no size the model runs with is known, shapes come from shape inference instead, dynamic dims
    counted as 1 (a split's MACs over the layer's scale with them alike, so the choice by energy is the same)."""
    try:
        probe = next(iter(calib.batches(batch_size))) if calib is not None else random_feeds(model, ctx.input_shapes, seed=ctx.seed)[0]
    except SlimError:
        if calib is not None and getattr(calib, "real", False):
            raise
        known, shapes = inferred_shapes(model, ctx.input_shapes), {}
        for layer in layers:
            x, y = known.get(layer.node.input[0]), known.get(layer.out_tensor)
            if x is not None and y is not None:
                shapes[layer.name] = {"input": tuple(d or 1 for d in x), "output": tuple(d or 1 for d in y), "batch": 1}
        return None, shapes
    return probe, probe_shapes(model, layers, probe)


def _accumulate(model: onnx.ModelProto, layers: list[Layer], tensor_of, rows_of, axis_of, batches, progress=None) -> dict:
    """One streamed pass: per layer, a GramAccumulator over `rows_of(layer, tensor, feed)` -> update args."""
    tap = TensorTap(model, [tensor_of(layer) for layer in layers], hand_over=True)
    accs = {layer.name: GramAccumulator(axis_of(layer)) for layer in layers}
    for feed in batches:
        values = tap(feed)
        for layer in layers:
            accs[layer.name].update(*rows_of(layer, values[tensor_of(layer)], feed))
        if progress is not None:
            progress.update(1)
    return accs


def _moments(acc: GramAccumulator, has_bias: bool) -> tuple[np.ndarray, np.ndarray]:
    """(covariance, mean) when a bias absorbs the mean, else (second moment, zeros)."""
    return (acc.covariance, acc.mean) if has_bias else (acc.second_moment, np.zeros_like(acc.mean))


def original_stats(model: onnx.ModelProto, layers: list[Layer], batches, mask_name, progress=None) -> dict[str, OutputStats]:
    """Output covariance (centered when the layer has a bias to absorb the mean) of every layer, one pass."""
    def rows(layer, value, feed):
        y = _pre_bias(layer, value)
        (y,), w = _drop_masked([y], _row_weights(layer, y, feed, mask_name))
        return y, w
    accs = _accumulate(model, layers, lambda layer: layer.out_tensor, rows, lambda layer: layer.feature_axis, batches, progress)
    return {layer.name: OutputStats.same(*_moments(accs[layer.name], layer.bias is not None)) for layer in layers}


class OriginalOutputs:
    """The original model's output rows of the layers to refit, per calibration batch, as paired_stats
    accumulates them (pre-bias, padding dropped), from one pass over the calibration data: every level of
    the sequential fit compares with the same values (the original model was run again at each level before:
    half of the pass's onnxruntime time on MiniLM-L6). `tapped`: the session's taps; `keep`: layers whose
    rows are kept, each taken once."""

    def __init__(self, model: onnx.ModelProto, tapped: list[Layer], keep: list[Layer], batches, mask_name):
        tap = TensorTap(model, [layer.out_tensor for layer in tapped], hand_over=True)
        self.rows: dict[str, list] = {layer.name: [] for layer in keep}
        for feed in batches:
            values = tap(feed)
            for layer in keep:
                y = _pre_bias(layer, values[layer.out_tensor])
                (y,), _ = _drop_masked([y], _row_weights(layer, y, feed, mask_name))
                self.rows[layer.name].append(y)

    def take(self, name: str) -> list[np.ndarray]:
        """The layer's rows per batch, released here (each level's layers are fitted once)."""
        return self.rows.pop(name)


def up_to(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """The model's nodes up to the last one producing `names` (in their order, so every ancestor of `names`
    is kept), without its outputs. With the model's value_info kept, onnxruntime fuses the part as in the
    whole model: the sequential fit's taps of MiniLM-L6 came out bit for bit the same at all 24 levels, in
    0.6 of the CPU time. A model with subgraphs (which may read outer tensors unnamed) is returned whole."""
    wanted = set(names)
    nodes = list(model.graph.node)
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in nodes for a in n.attribute):
        return model
    last = max(i for i, n in enumerate(nodes) if wanted & set(n.output)) + 1
    read = {i for n in nodes[:last] for i in n.input}
    made = {o for n in nodes[:last] for o in n.output}
    graph = onnx.helper.make_graph(nodes[:last], model.graph.name, list(model.graph.input), [],
                                   [t for t in model.graph.initializer if t.name in read],
                                   value_info=[v for v in model.graph.value_info if v.name in made])
    part = onnx.helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    part.functions.extend(model.functions)
    return part


def paired_stats(original: OriginalOutputs, current: onnx.ModelProto, layers: list[Layer], batches, mask_name,
                 reference: dict[str, OutputStats]) -> dict[str, OutputStats]:
    """Stats of z (the layer as it still is, on the compressed model's input) against y (the original's output).

    `reference` holds the original model's own output stats (y's covariance and mean), already measured.
    """
    names = [layer.out_tensor for layer in layers]
    tap = TensorTap(up_to(current, names), names, hand_over=True)
    zz = {layer.name: GramAccumulator(layer.feature_axis) for layer in layers}
    zy = {layer.name: CrossGramAccumulator(layer.feature_axis) for layer in layers}
    then = {layer.name: original.take(layer.name) for layer in layers}
    for i, feed in enumerate(batches):
        now = tap(feed)
        for layer in layers:
            z = _pre_bias(layer, now[layer.out_tensor])
            (z,), w = _drop_masked([z], _row_weights(layer, z, feed, mask_name))
            zz[layer.name].update(z, w)
            zy[layer.name].update(z, then[layer.name][i], w)
    out = {}
    for layer in layers:
        a, c, ref = zz[layer.name], zy[layer.name], reference[layer.name]
        if layer.bias is not None:
            out[layer.name] = OutputStats(a.covariance, c.cross_covariance, ref.cyy, a.mean, ref.mean_y, ref.metric)
        else:
            n = max(a.count, 1.0)
            out[layer.name] = OutputStats(a.second_moment, c.cross / n, ref.cyy, np.zeros_like(a.mean), ref.mean_y, ref.metric)
    return out


MAX_PATCH = 2304  # im2col features (Cin*kh*kw) up to which spatial SVD is data-aware (a 2304^2 covariance)


def im2col(x: np.ndarray, kernel_shape, attrs: dict) -> np.ndarray:
    """[N, Cin, H, W] -> [N*Ho*Wo, Cin*kh*kw] patches (features ordered c, i, j like a Conv kernel's), float64."""
    return linear.conv_patches(x, tuple(kernel_shape), attrs.get("strides", [1, 1]), attrs.get("pads", [0, 0, 0, 0]),
                               attrs.get("dilations", [1, 1])).astype(np.float64)


def patch_stats(model: onnx.ModelProto, layers: list[Layer], batches, progress=None) -> dict[str, PatchStats]:
    """im2col input-patch covariance (centered when the layer has a bias) of Conv layers, one pass."""
    accs = _accumulate(model, layers, lambda layer: layer.node.input[0],
                       lambda layer, value, feed: (im2col(value, layer.kernel.shape[2:], layer.attrs),),
                       lambda layer: -1, batches, progress)
    return {layer.name: PatchStats(*_moments(accs[layer.name], layer.bias is not None)) for layer in layers}
