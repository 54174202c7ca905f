"""Calibration-driven importance and allocation: streamed statistics equal batch-at-once ones, every data
criterion ranks planted dead/weak channels last, sensitivity and search meet the MACs budget."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxslim.calibration import load_calibration
from onnxslim.channels import analyze_graph
from onnxslim.context import Context
from onnxslim.graph import infer_shapes, to_graph
from onnxslim.passes import cleanup
from onnxslim.passes.prune import PruneConfig, run
from onnxslim.passes.prune.data_importance import (activation_scores, collect_channel_stats,
                                                   reconstruction_scores)
from onnxslim.runtime import tapped_session
from onnxslim.passes.prune.exits import find_exits
from onnxslim.passes.prune.repair import collect
from onnxslim.progress import silent
from onnxslim.runtime import session

MODELS = Path(__file__).resolve().parent.parent / "models"
DEAD, WEAK = 2, 5


def planted_model(kind: str) -> onnx.ModelProto:
    """x [n,3,6,6] -> Conv3x3 (3->8) -> Relu -> Conv1x1 (8->4) -> y, with channel DEAD always zero after the
    Relu, and channel WEAK planted for the criterion: tiny activations (activation), mostly zero (apoz),
    a constant map of rank 1 (hrank), or ignored by the next layer (reconstruction)."""
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    b1 = np.abs(rng.standard_normal(8)).astype(np.float32)
    w2 = rng.standard_normal((4, 8, 1, 1)).astype(np.float32)
    w1[DEAD] = 0
    b1[DEAD] = -1.0
    if kind == "activation":
        w1[WEAK] *= 1e-3
        b1[WEAK] = 1e-3
    elif kind == "apoz":
        b1[WEAK] = -2.5  # positive only for the rare large inputs
    elif kind == "hrank":
        w1[WEAK] = 0
        b1[WEAK] = 1.0
    elif kind == "reconstruction":
        w2[:, WEAK] *= 1e-3
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="conv2")]
    graph = helper.make_graph(nodes, "planted", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 6, 6])],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _setup(model):
    analysis = analyze_graph(to_graph(infer_shapes(model)))
    group = next(g for g in analysis.prunable_groups if g.n_classes == 8)
    exits, _ = find_exits(analysis, [group])
    return group, exits


def _batches(n_batches=4, size=4, seed=3):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((size, 3, 6, 6)).astype(np.float32)} for _ in range(n_batches)]


@pytest.mark.parametrize("criterion", ["activation", "apoz", "hrank", "reconstruction"])
def test_planted_dead_and_weak_channels_rank_last(criterion):
    model = planted_model(criterion)
    group, exits = _setup(model)
    if criterion == "reconstruction":
        stats = collect(model, None, exits, None, _batches(), per_sample=64)
        score = reconstruction_scores(group, exits, stats)
    else:
        sess, names = tapped_session(model, [e.input for e in exits])
        stats = collect_channel_stats(exits, sess, names, _batches(), want_rank=criterion == "hrank")
        score = activation_scores(group, exits, stats, criterion)
    assert set(np.argsort(score, kind="stable")[:2]) == {DEAD, WEAK}


def test_streamed_statistics_equal_batch_at_once():
    model = planted_model("activation")
    group, exits = _setup(model)
    small = _batches(6, 2)
    whole = [{"x": np.concatenate([b["x"] for b in small])}]
    a = collect(model, None, exits, None, small, per_sample=36)["conv2"]
    b = collect(model, None, exits, None, whole, per_sample=36)["conv2"]
    np.testing.assert_allclose(a.gram, b.gram, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(a.cross, b.cross, rtol=1e-5, atol=1e-4)
    assert a.count == b.count == 12 * 36
    np.testing.assert_allclose(a.y_sq, b.y_sq, rtol=1e-6)
    sess, names = tapped_session(model, [exits[0].input])
    s1 = collect_channel_stats(exits, sess, names, small, want_rank=True)[exits[0].input]
    s2 = collect_channel_stats(exits, sess, names, whole, want_rank=True)[exits[0].input]
    np.testing.assert_allclose(s1.abs_sum, s2.abs_sum, rtol=1e-6)
    np.testing.assert_array_equal(s1.zeros, s2.zeros)
    np.testing.assert_array_equal(s1.rank_sum, s2.rank_sum)


@pytest.fixture(scope="module")
def digits():
    model = cleanup.run(onnx.load(str(MODELS / "digits_resnet_folded.onnx"))).model
    return model, load_calibration(MODELS / "digits_calib.npz", model)


@pytest.mark.slow
def test_default_allocation_is_sensitivity_with_real_data_and_global_without(digits):
    model, calib = digits
    with_data = run(model, PruneConfig(target_macs=0.7, importance="l1", round_to=4, sensitivity_step=0.05, fidelity_samples=16),
                    Context(calibration=calib, progress=silent))
    assert with_data.report["allocation"] == "sensitivity" and with_data.report["allocation_trace"]
    assert with_data.report["estimated_macs_fraction"] <= 0.7 + 1e-6
    without = run(model, PruneConfig(target_macs=0.7, round_to=4), Context(progress=silent))
    assert without.report["allocation"] == "global" and "allocation_trace" not in without.report
    assert run(model, PruneConfig(ratio=0.3), Context(calibration=calib, progress=silent)).report["allocation"] == "uniform"


@pytest.mark.slow
@pytest.mark.parametrize("allocation", ["sensitivity", "search"])
def test_calibrated_allocations_meet_the_budget(digits, allocation):
    model, calib = digits
    config = PruneConfig(target_macs=0.7, importance="reconstruction", allocation=allocation, round_to=4,
                         search_time=2.0, sensitivity_step=0.05, fidelity_samples=16)
    result = run(model, config, Context(calibration=calib, progress=silent))
    assert result.report["estimated_macs_fraction"] <= 0.7 + 1e-6
    assert result.report["allocation_trace"]
    from onnxslim.cost import model_cost
    fraction = model_cost(result.model, {"input": (1, 1, 8, 8)})["macs"] / model_cost(model, {"input": (1, 1, 8, 8)})["macs"]
    assert fraction <= 0.7 + 1e-6
    assert result.report["fidelity"]["after_repair"]["loss"] <= result.report["fidelity"]["before_repair"]["loss"]
    out = session(result.model).run(None, {"input": np.load(MODELS / "digits_eval.npz")["input"][:4]})[0]
    assert out.shape == (4, 10) and np.isfinite(out).all()
    import json
    json.dumps(result.report)


def test_config_rejects_unknown_names():
    from onnxslim.errors import SlimError
    with pytest.raises(SlimError, match="unknown importance 'taylor'"):
        PruneConfig(target_macs=0.5, importance="taylor").check()
    with pytest.raises(SlimError, match="--allocation sensitivity needs --target-macs"):
        PruneConfig(ratio=0.5, allocation="sensitivity").check()


def pooled_classifier(heavy=(0, 1, 2, 3)) -> onnx.ModelProto:
    """x [n,3,4,4] -> Conv1x1 (3->16) -> Relu -> GlobalAveragePool -> Flatten -> Gemm (16->4): one row per
    image at the Gemm; the classifier leans on the `heavy` features (10x the weights of the others)."""
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal((16, 3, 1, 1)).astype(np.float32)
    b1 = np.abs(rng.standard_normal(16)).astype(np.float32)
    w2 = 0.1 * rng.standard_normal((16, 4)).astype(np.float32)
    w2[list(heavy)] *= 10
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], name="conv"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "w2"], ["y"], name="fc")]
    graph = helper.make_graph(nodes, "pooled", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_reconstruction_with_fewer_rows_than_features_keeps_what_the_classifier_leans_on():
    model = pooled_classifier()
    analysis = analyze_graph(to_graph(infer_shapes(model)))
    group = next(g for g in analysis.prunable_groups if g.n_classes == 16)
    exits, _ = find_exits(analysis, [group])
    rng = np.random.default_rng(5)
    few = collect(model, None, exits, None, [{"x": rng.standard_normal((6, 3, 4, 4)).astype(np.float32)}], per_sample=1)
    assert few["fc"].count == 6 < 16
    shrunk = reconstruction_scores(group, exits, few, prior_rows=8.0)
    assert set(np.argsort(-shrunk)[:4]) == {0, 1, 2, 3}
    # with as many rows as features the Gram is regular and the prior changes nothing
    many = collect(model, None, exits, None, [{"x": rng.standard_normal((32, 3, 4, 4)).astype(np.float32)}], per_sample=1)
    np.testing.assert_array_equal(reconstruction_scores(group, exits, many, prior_rows=8.0), reconstruction_scores(group, exits, many))
