"""How much a layer's own output error costs at the model's outputs, measured one layer at a time.

A layer's relative output error says nothing about how far it travels: a Q projection feeding a softmax and
an FFN output added to a wide residual stream differ a lot. We split each layer alone at a probe rank, run
a few calibration batches, and take (model output error) / (layer error) as the layer's weight in the
allocation. Model output error = mean over graph outputs of ||o' - o||^2 / ||o||^2.
"""
from __future__ import annotations

import itertools

import onnx

from onnxslim.errors import SlimError
from onnxslim.metrics import mean_relative_error
from onnxslim.runtime import TensorTap


def output_error(reference: list[dict], model: onnx.ModelProto, feeds: list[dict]) -> float:
    tap = TensorTap(model, [])
    return mean_relative_error(reference, [tap(feed) for feed in feeds])


def measure(model: onnx.ModelProto, probes: dict, split_one, calib, batch_size: int, batches: int, progress=None,
            outputs=()) -> dict[str, float]:
    """{layer name: output error per unit of layer error}; `probes` = {name: layer error at the probe rank}.

    `split_one(name) -> model` returns the model with only that layer split at its probe rank.
    """
    feeds = list(itertools.islice(calib.batches(batch_size), batches))
    known = [o.name for o in model.graph.output]
    unknown = [name for name in outputs if name not in known]
    if unknown:
        raise SlimError(f"low-rank sensitivity: {unknown} are not outputs of the model; it has {known}")
    outputs = list(outputs) or known
    base = TensorTap(model, [])
    reference = [{k: v for k, v in base(feed).items() if k in outputs} for feed in feeds]
    weights = {}
    for name, layer_error in probes.items():
        measured = output_error(reference, split_one(name), feeds)
        weights[name] = measured / max(layer_error, 1e-12)
        if progress is not None:
            progress.update(1)
    return weights
