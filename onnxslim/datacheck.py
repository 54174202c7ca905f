"""Checks of user data before it calibrates or validates anything (issue 11: the preprocessing trap).

`--mean 127 --std 128` with the then-default scale 1/255 fed EfficientNet-Lite0 near-constant inputs; the
run exited 0 and the pruned model scored 0% top-1. These checks look at the first samples as prepared and
at the original model on them, and stop (SlimError, exit 2) or warn when they are degenerate:
- near-constant samples (every value within a hair of the sample's mean);
- values far outside what the model's first layer expects (a BatchNormalization's running statistics, or
  an input scale no trained layer sees, such as raw 0..255 pixels into a Conv);
- a classifier predicting one class for nearly every sample (a stop for image folders, whose inputs we
  prepared; a warning for arrays the user prepared, where it may be intended).
"""
from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import onnx
import onnx.numpy_helper

from .errors import SlimError
from .output_kinds import output_kind
from .runtime import outputs_on, with_outputs

CHECK_SAMPLES = 32
NEAR_CONSTANT = 1e-2     # sample std below this fraction of its |mean| (or of 1e-2 for zero-mean samples)
ONE_CLASS = 0.9          # this share of samples in one class is "one class for nearly every sample"
RAW_PIXEL_STD = 20.0     # a first Conv/Gemm input with a larger std looks like unscaled 0..255 data
BN_FAR = 10.0            # median |data mean - running mean| in running stds beyond which a BN input is wrong
BN_SPREAD = 50.0         # or the data's spread off by more than this factor either way
_PASS_THROUGH = {"Transpose", "Reshape", "Cast", "Identity", "Sub", "Div", "Mul", "Add", "Unsqueeze", "Squeeze",
                 "Pad", "Resize", "Slice", "Concat", "Flatten"}
_LAYERS = {"Conv", "Gemm", "MatMul", "BatchNormalization", "ConvTranspose"}
OVERRIDE = "--no-data-check to go on anyway"


def check_data(model: onnx.ModelProto, dataset, what: str = "--calib") -> list[str]:
    """Warnings (strings) about `dataset`'s first samples; raises SlimError for data no model can use."""
    per_batch = dataset._effective_batch(8)  # a model with a fixed batch dim of 1 gets batches of 1
    batches = list(itertools.islice(dataset.batches(8), -(-CHECK_SAMPLES // per_batch)))
    if not batches:
        return []
    hint = _preprocess_hint(dataset)
    for name in batches[0]:
        x = np.concatenate([b[name] for b in batches])
        if np.issubdtype(x.dtype, np.floating) and x[0].size > 1:
            _check_constant(x, f"{what} input '{name}'", hint)
    layer_inputs, outputs = _run(model, batches)
    inits = {t.name: t for t in model.graph.initializer}
    warnings = [w for layer, values in layer_inputs if (w := _check_layer_input(values, layer, inits, what, hint))]
    labels = getattr(dataset, "classes", None)
    for name, values in outputs.items():
        if output_kind(name, values) != "scores" or len(values) < 8:
            continue
        cls, count = Counter(values.argmax(1).tolist()).most_common(1)[0]
        share = count / len(values)
        if share >= ONE_CLASS and not (labels and len(set(labels[:len(values)])) == 1):
            message = (f"{what}: the original model predicts class {cls} for {count} of {len(values)} samples "
                       f"(output '{name}'): the inputs are probably prepared wrongly{hint}")
            if not hasattr(dataset, "files"):
                # arrays the user prepared (token ids, features): may be intended, so a warning; images we
                # prepared ourselves, where this is the preprocessing trap, stop
                warnings.append(message)
                continue
            raise SlimError(f"{message} ({OVERRIDE})")
    return warnings


def _check_constant(x: np.ndarray, what: str, hint: str) -> None:
    flat = x.reshape(len(x), -1).astype(np.float64)
    std, mean = flat.std(1), np.abs(flat.mean(1))
    flat_samples = std <= NEAR_CONSTANT * np.maximum(mean, 1e-2)
    if flat_samples.mean() >= 0.5:
        raise SlimError(f"{what}: {int(flat_samples.sum())} of {len(x)} samples are near-constant "
                        f"(std {np.median(std):.3g} around {np.median(flat.mean(1)):.3g}){hint} ({OVERRIDE})")


def _preprocess_hint(dataset) -> str:
    pre = getattr(dataset, "preprocess", None)
    if pre is None:
        return ""
    mean = ",".join(f"{v:g}" for v in pre.mean)
    std = ",".join(f"{v:g}" for v in pre.std)
    return f"; images became (pixels x {pre.effective_scale():.6g} - {mean}) / {std}: check --scale, --mean, --std"


def _first_layers(model: onnx.ModelProto) -> dict[str, tuple[str, onnx.NodeProto]]:
    """{input name: (tensor the first weighted layer reads, that node)} following pass-through ops."""
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    inits = {t.name for t in model.graph.initializer}
    found = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        frontier, seen = [vi.name], set()
        while frontier and vi.name not in found:
            tensor = frontier.pop(0)
            for node in consumers.get(tensor, []):
                if node.op_type in _LAYERS and node.input and node.input[0] == tensor:
                    found[vi.name] = (tensor, node)
                    break
                if node.op_type in _PASS_THROUGH and node.name not in seen:
                    seen.add(node.name)
                    frontier.extend(node.output)
    return found


def _run(model: onnx.ModelProto, batches: list[dict]):
    """The first layers' inputs and the model's outputs on the batches, in one session."""
    firsts = _first_layers(model)
    tapped = with_outputs(model, [t for t, _ in firsts.values()])
    results = outputs_on(tapped, batches, what="onnxruntime cannot run the original model on the data")
    joined = {n: np.concatenate([r[n] for r in results]) for n in results[0]}
    layer_inputs = [(node, joined[t]) for t, node in firsts.values() if np.issubdtype(joined[t].dtype, np.floating)]
    outputs = {o.name: joined[o.name] for o in model.graph.output}
    return layer_inputs, outputs


def _check_layer_input(x: np.ndarray, node: onnx.NodeProto, inits: dict, what: str, hint: str) -> str | None:
    if node.op_type == "BatchNormalization":
        return _check_against_bn(x, node, inits, what, hint)
    std = float(np.std(x.astype(np.float64)))
    if std > RAW_PIXEL_STD:
        return (f"{what}: the first layer ({node.op_type} '{node.name}') reads values with std {std:.3g}; trained "
                f"layers usually see inputs scaled to about -1..1 or 0..1 (raw 0..255 pixels?){hint}")
    return None


def _check_against_bn(x, node, inits: dict, what: str, hint: str) -> None:
    """A BatchNormalization first layer knows the input statistics it was trained on: stop when the data's
    per-channel means sit many running standard deviations away, or its spread is off by a large factor."""
    if len(node.input) < 5 or node.input[3] not in inits or node.input[4] not in inits or x.ndim < 2:
        return
    mu = onnx.numpy_helper.to_array(inits[node.input[3]]).astype(np.float64)
    sd = np.sqrt(onnx.numpy_helper.to_array(inits[node.input[4]]).astype(np.float64) + 1e-5)
    axes = tuple(i for i in range(x.ndim) if i != 1)
    data = x.astype(np.float64)
    if data.shape[1] != len(mu):
        return
    z = float(np.median(np.abs(data.mean(axes) - mu) / sd))
    ratio = float(np.median(data.std(axes) / sd))
    if z > BN_FAR or not 1 / BN_SPREAD < ratio < BN_SPREAD:
        raise SlimError(f"{what}: the first layer (BatchNormalization '{node.name}') was trained on inputs with other "
                        f"statistics: channel means {z:.3g} running std away, spread x{ratio:.3g}{hint} ({OVERRIDE})")
