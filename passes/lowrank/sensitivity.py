"""How much a layer's own output error costs at the model's outputs, measured one layer at a time.

A layer's relative output error says nothing about how far it travels: a Q projection feeding a softmax and
an FFN output added to a wide residual stream differ a lot. We split each layer alone at a probe rank, run
a few calibration batches, and take (model output error) / (layer error) as the layer's weight in the
allocation. Model output error = mean over graph outputs of ||o' - o||^2 / ||o||^2.

The tries run on the opened model (opened.py: the layer's W' = A B fed as an input, no model or session per
layer), in network order, and each runs only the network after its layer: the part before is the original
model's, computed once and carried from one layer's start to the next (slices of passes/prune/suffix.py).
W' = A B instead of the split pair (x A) B changes the outputs by float rounding only.
"""
from __future__ import annotations

import itertools

import onnx

from onnxslim.errors import SlimError
from onnxslim.metrics import mean_relative_error
from onnxslim.passes.prune.suffix import Slicer
from onnxslim.runtime import TensorTap

from .opened import OpenWeights


def measure(model: onnx.ModelProto, opened: OpenWeights, probes: dict, arrays_of, calib, batch_size: int,
            batches: int, progress=None, outputs=()) -> dict[str, float]:
    """{layer name: output error per unit of layer error}; `probes` = {name: layer error at the probe rank}.

    `opened` keeps only the compared outputs; `arrays_of(name)` returns the opened inputs of that layer split
    alone at its probe rank (OpenWeights.set).
    """
    feeds = list(itertools.islice(calib.batches(batch_size), batches))
    known = [o.name for o in model.graph.output]
    unknown = [name for name in outputs if name not in known]
    if unknown:
        raise SlimError(f"low-rank sensitivity: {unknown} are not outputs of the model; it has {known}")
    outputs = list(outputs) or known
    base = TensorTap(model, [], hand_over=True)
    reference = [{k: v for k, v in base(feed).items() if k in outputs} for feed in feeds]
    slicer = Slicer(opened.model, opened.names)
    weights = opened.base()
    starts = {name: slicer.start_of(opened.inputs_of(name)) if slicer.sliceable else 0 for name in probes}
    carried = [{n: feed[n] for n in slicer.data_inputs} for feed in feeds]
    at, measured = 0, {}
    for name in sorted(probes, key=starts.get):
        if starts[name] > at:  # the original model up to this layer, continued from the previous one's start
            carried, at = [slicer.run(at, starts[name], c, weights) for c in carried], starts[name]
        tried = {**weights, **arrays_of(name)}
        error = mean_relative_error(reference, [slicer.run(at, len(slicer.nodes), c, tried) for c in carried])
        measured[name] = error / max(probes[name], 1e-12)
        if progress is not None:
            progress.update(1)
    return {name: measured[name] for name in probes}

