"""Plan evaluation by network slices (passes/prune/suffix.py, issue 11 run time): a change scored by running
only the network after its first changed exit gives the same outputs as the whole parametric model."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxslim.calibration import load_calibration
from onnxslim.channels import analyze_graph
from onnxslim.context import Context
from onnxslim.graph import infer_shapes, to_graph
from onnxslim.passes import cleanup
from onnxslim.passes.prune import PruneConfig, run
from onnxslim.passes.prune.evaluate import Evaluator, State
from onnxslim.passes.prune.exits import find_exits
from onnxslim.passes.prune.suffix import Slicer
from onnxslim.progress import silent

MODELS = Path(__file__).resolve().parent.parent / "models"


@pytest.fixture(scope="module")
def digits():
    model = infer_shapes(cleanup.run(onnx.load(str(MODELS / "digits_resnet_folded.onnx"))).model)
    analysis = analyze_graph(to_graph(model), ())
    exits, _ = find_exits(analysis, analysis.prunable_groups)
    calib = load_calibration(MODELS / "digits_calib.npz", model, size=24)
    return model, exits, list(calib.batches(8))


def _change(exits, rng, k):
    """Random new weights for `k` exits of one group: a zeroed half of the features, the rest scaled."""
    group = exits[int(rng.integers(len(exits)))].group
    picked = [e for e in exits if e.group is group][:k]
    out = {}
    for e in picked:
        w2 = e.w2 * rng.uniform(0.5, 1.5, e.w2.shape)
        w2[:, rng.random(e.n_features) < 0.5] = 0.0
        bias = (e.bias if e.bias is not None else np.zeros(e.w2.shape[0])) + rng.normal(0, 0.1, e.w2.shape[0])
        out[e.node] = (w2, bias)
    return out


def test_slice_losses_equal_whole_model_losses(digits):
    model, exits, batches = digits
    evaluator = Evaluator(model, exits, batches)
    rng = np.random.default_rng(0)
    base = State(exits).with_changes(_change(exits, rng, 2))  # a base that is not the original
    changes = [_change(exits, rng, 3) for _ in range(6)]
    whole = [evaluator.loss(base.with_changes(c)) for c in changes]
    sliced = evaluator.losses(base, changes)
    assert len({round(x, 9) for x in whole}) > 1  # the changes matter
    np.testing.assert_allclose(sliced, whole, rtol=1e-6, atol=1e-9)
    assert evaluator.evaluations == 12


def test_cut_is_what_crosses_the_position(digits):
    model, exits, _ = digits
    names = {i.name for i in model.graph.input} - {model.graph.input[0].name}
    slicer = Slicer(model, names)
    nodes = list(model.graph.node)
    for position in range(1, len(nodes)):
        before = {o for n in nodes[:position] for o in n.output} | {model.graph.input[0].name}
        after = {i for n in nodes[position:] for i in n.input} | {o.name for o in model.graph.output}
        assert set(slicer.cut(position)) == (before & after)


def test_sensitivity_plan_unchanged_by_slicing(digits, monkeypatch):
    """The same sensitivity + repair run with whole-model evaluation and with slices: the same model."""
    model = cleanup.run(onnx.load(str(MODELS / "digits_resnet_folded.onnx"))).model
    calib = load_calibration(MODELS / "digits_calib.npz", model, size=32)
    config = PruneConfig(target_macs=0.6, importance="l1", round_to=4, sensitivity_step=0.05, repair_passes=2)
    sliced = run(model, config, Context(calibration=calib, progress=silent))
    monkeypatch.setattr(Evaluator, "losses", lambda self, base, changes: [self.loss(base.with_changes(c)) for c in changes])
    whole = run(model, config, Context(calibration=calib, progress=silent))
    assert sliced.report["allocation_trace"] == whole.report["allocation_trace"]
    for a, b in itertools.zip_longest(sliced.model.graph.initializer, whole.model.graph.initializer):
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(a), onnx.numpy_helper.to_array(b))
