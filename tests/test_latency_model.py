"""The latency cost model: profiled kernels map back to the nodes they run (fused and NCHWc kernels are
named after their output tensor), a plan's latency scales each kernel by the kept fractions of its channel
spaces, and --target-latency meets its budget. No timing is asserted: only the model's arithmetic and
what it maps on a real profile."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxslim.calibration import load_calibration
from onnxslim.channels import analyze_graph
from onnxslim.context import Context
from onnxslim.errors import SlimError
from onnxslim.graph import infer_shapes, load_model, to_graph
from onnxslim.passes import cleanup
from onnxslim.passes.prune import PruneConfig, run
from onnxslim.passes.prune.allocate import Alignment, uniform_plan
from onnxslim.passes.prune.latency import LatencyModel, measured_latency_model

MODELS = Path(__file__).resolve().parent.parent / "models"


def three_convs():
    """x -> conv1 (3->8, 3x3) -> Clip -> conv2 (8->8) -> Relu -> conv3 (8->4) -> y."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("w1", (8, 3, 3, 3)), ("w2", (8, 8, 1, 1)), ("w3", (4, 8, 1, 1)))]
    inits += [numpy_helper.from_array(np.float32(0), "lo"), numpy_helper.from_array(np.float32(6), "hi")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["h1", "lo", "hi"], ["r1"], name="clip"),
             helper.make_node("Conv", ["r1", "w2"], ["h2"], name="conv2"),
             helper.make_node("Relu", ["h2"], ["r2"], name="relu"),
             helper.make_node("Conv", ["r2", "w3"], ["y"], name="conv3")]
    graph = helper.make_graph(nodes, "three", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _groups_by_source(analysis):
    return {s.node: g for g in analysis.prunable_groups for s in g.members("source")}


def test_kernels_map_to_their_nodes_and_scale_with_kept_channels():
    analysis = analyze_graph(to_graph(infer_shapes(three_convs())))
    times = {
        "r1_nchwc": ("Conv", 4.0),        # conv1 fused with the Clip, named after the Clip's output
        "conv2": ("Conv", 2.0),           # named after the node
        "relu": ("Relu", 1.0),
        "conv3_kernel_time": ("Conv", 1.0),
        "ReorderOutput": ("ReorderOutput", 0.5),  # maps to no node: constant
    }
    model = LatencyModel(analysis, times, wall=9.0)
    assert model.total == pytest.approx(9.0)
    assert model.constant == pytest.approx(0.5 + 0.5)  # the unmapped kernel + time between kernels
    assert model.mapped_fraction == pytest.approx(8.0 / 8.5)
    by_source = _groups_by_source(analysis)
    a, b = by_source["conv1"], by_source["conv2"]
    plan = {a.id: np.arange(a.n_classes) < 4, b.id: np.arange(b.n_classes) < 2}
    # conv1+clip x 4/8 (its input is the graph's), conv2 x 2/8 out x 4/8 in, relu x 2/8, conv3 x 2/8 in
    expected = 1.0 + 4.0 * 0.5 + 2.0 * 0.25 * 0.5 + 1.0 * 0.25 + 1.0 * 0.25
    assert model.cost(plan) == pytest.approx(expected)
    assert model.fraction({}) == pytest.approx(1.0)


def test_a_non_compute_kernel_does_not_take_the_exit_of_the_conv_above_it():
    analysis = analyze_graph(to_graph(infer_shapes(three_convs())))
    model = LatencyModel(analysis, {"r1": ("Clip", 1.0)}, wall=1.0)
    a = _groups_by_source(analysis)["conv1"]
    assert model.cost({a.id: np.arange(a.n_classes) < 2}) == pytest.approx(0.25)


def test_a_real_profile_maps_the_kernels_of_a_shipped_model():
    model = cleanup.run(load_model(MODELS / "digits_resnet.onnx")).model
    analysis = analyze_graph(to_graph(infer_shapes(model)))
    latency = measured_latency_model(model, analysis, threads=1)
    assert latency.mapped_fraction > 0.95
    assert len(latency.terms) >= 5
    assert latency.fraction({}) == pytest.approx(1.0)
    plan = uniform_plan(analysis.prunable_groups, {g.id: np.ones(g.n_classes) for g in analysis.prunable_groups}, 0.5, Alignment())
    assert latency.constant / latency.total < latency.fraction(plan) < 1.0


@pytest.mark.slow
def test_target_latency_meets_its_estimated_budget_and_cuts_macs():
    model = cleanup.run(load_model(MODELS / "digits_resnet.onnx")).model
    calib = load_calibration(str(MODELS / "digits_calib.npz"), model, size=32)
    result = run(model, PruneConfig(target_latency=0.8, allocation="sensitivity", importance="l1"), Context(calibration=calib))
    report = result.report["latency_model"]
    assert report["estimated_fraction"] <= 0.8 + 1e-6
    assert result.report["estimated_macs_fraction"] < 1.0
    assert result.report["allocation_trace"][-1]["latency_fraction"] <= 0.8 + 1e-6


@pytest.mark.parametrize("kw,message", [(dict(target_macs=0.5, target_latency=0.5), "give exactly one of"),
                                        (dict(target_latency=0.0), "--target-latency 0: the fraction must be in"),
                                        (dict(target_latency=1.5), "--target-latency 1.5: the fraction must be in")])
def test_latency_target_is_checked(kw, message):
    with pytest.raises(SlimError, match=message):
        PruneConfig(**kw).check()


def test_a_fused_kernel_with_a_name_of_its_own_maps_by_its_output_tensor():
    analysis = analyze_graph(to_graph(infer_shapes(three_convs())))
    # onnxruntime's fused kernels (BiasGelu, SkipLayerNormalization...) get new names; their outputs keep
    # the original tensor names (here with the NCHWc suffix)
    model = LatencyModel(analysis, {"Fused_token_7": ("FusedThing", 1.0), "Other_token_8": ("X", 1.0)}, wall=2.0,
                         outputs={"Fused_token_7": ["r2_nchwc"], "Other_token_8": ["not_a_tensor"]})
    b = _groups_by_source(analysis)["conv2"]
    assert model.mapped_fraction == pytest.approx(0.5)
    assert model.cost({b.id: np.arange(b.n_classes) < 2}) == pytest.approx(1.0 + 0.25)
