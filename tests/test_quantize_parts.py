"""Pieces of the quantize pass on their own: Pad folding, zero biases, weight clipping, KL and percentile math."""
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxslim.graph import to_graph, to_model
from onnxslim.passes.quantize import prepare, ranges, weights


def pad_conv_model(pads, value=0.0, mode="constant", conv_pads=(0, 0, 0, 0)):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.array(pads, np.int64), "pads"), numpy_helper.from_array(np.array(value, np.float32), "value"),
             numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")]
    nodes = [helper.make_node("Pad", ["x", "pads", "value"], ["p"], name="pad", mode=mode),
             helper.make_node("Conv", ["p", "w"], ["y"], name="conv", kernel_shape=[3, 3], pads=list(conv_pads), strides=[2, 2])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 9, 9])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_zero_pad_folds_into_conv_exactly():
    x = np.random.default_rng(1).standard_normal((2, 3, 9, 9)).astype(np.float32)
    for pads, conv_pads in [([0, 0, 0, 1, 0, 0, 1, 2], (0, 0, 0, 0)), ([0, 0, 1, 1, 0, 0, 1, 1], (1, 0, 0, 1))]:
        model = pad_conv_model(pads, conv_pads=conv_pads)
        graph = to_graph(model)
        assert prepare.fold_pads(graph) == ["pad"]
        folded = to_model(graph, like=model)
        assert [n.op_type for n in folded.graph.node] == ["Conv"]
        np.testing.assert_allclose(run(folded, x), run(model, x), rtol=1e-5, atol=1e-5)


def test_pads_that_are_not_plain_zero_spatial_stay():
    for model in (pad_conv_model([0, 0, 1, 1, 0, 0, 1, 1], value=1.0), pad_conv_model([0, 0, 1, 1, 0, 0, 1, 1], mode="reflect"),
                  pad_conv_model([0, 1, 1, 1, 0, 0, 1, 1])):
        graph = to_graph(model)
        assert prepare.fold_pads(graph) == []


def test_zero_bias_added_is_exact():
    model = pad_conv_model([0, 0, 1, 1, 0, 0, 1, 1])
    graph = to_graph(model)
    assert prepare.add_zero_biases(graph) == ["conv"]
    x = np.random.default_rng(2).standard_normal((2, 3, 9, 9)).astype(np.float32)
    np.testing.assert_allclose(run(to_model(graph, like=model), x), run(model, x), rtol=1e-6)


def test_mse_clipping_never_worse_than_max_abs():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    w[3, 0, 0, 0] = 25.0  # one outlier weight in channel 3
    for qmax in (127, 64):
        clip = weights.mse_range(w, qmax)
        amax = np.abs(w.reshape(16, -1)).max(1)
        assert np.all(clip <= amax + 1e-6)

        def err(c):
            step = (c / qmax)[:, None]
            flat = w.reshape(16, -1).astype(np.float64)
            return ((np.clip(np.round(flat / step), -qmax, qmax) * step - flat) ** 2).sum(1)
        assert np.all(err(clip) <= err(amax) * (1 + 1e-6) + 1e-8)
    w2 = rng.laplace(size=(4, 4096)).astype(np.float32)  # heavy-tailed rows: the MSE optimum clips the tails at 7 bits
    assert np.all(weights.mse_range(w2, 64) < np.abs(w2).max(1))


def test_percentile_threshold():
    hist = np.ones(1000)
    assert ranges.percentile_threshold(hist, 10.0, 99.0) == 10.0 * 990 / 1000  # 99% of the mass lies below bin 990
    assert ranges.percentile_threshold(np.zeros(10), 3.0, 99.0) == 3.0


def test_entropy_prefers_full_range_for_a_spike_at_the_top():
    # ReLU6-like: mass spread below 6 plus a spike at exactly 6 -> clipping would move the spike
    rng = np.random.default_rng(0)
    x = np.concatenate([np.clip(rng.exponential(1.0, 300000), 0, 6), np.full(30000, 6.0)])
    hist, _ = np.histogram(x, bins=2048, range=(0, 6.0))
    assert ranges.entropy_threshold(hist.astype(float), 6.0, levels=256) == 6.0
