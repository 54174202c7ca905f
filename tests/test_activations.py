import numpy as np
from onnx import TensorProto, helper, numpy_helper
import pytest

from onnxslim.activations import CrossGramAccumulator, GramAccumulator
from onnxslim.runtime import TensorTap, stream_tensors, with_outputs
from onnxslim.errors import SlimError


def _tiny_model():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("ReduceSum", ["r"], ["y"], name="sum", keepdims=0)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), w


def test_stream_returns_inner_tensors_and_outputs_per_batch():
    model, w = _tiny_model()
    rng = np.random.default_rng(1)
    batches = [{"x": rng.standard_normal((n, 4)).astype(np.float32)} for n in (2, 5, 3)]
    seen = list(stream_tensors(model, ["h", "r"], batches))
    assert len(seen) == 3
    for feed, out in zip(batches, seen):
        np.testing.assert_allclose(out["h"], feed["x"] @ w, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["r"], np.maximum(feed["x"] @ w, 0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["y"], np.maximum(feed["x"] @ w, 0).sum(), rtol=1e-5)
    # the original model is untouched
    assert [o.name for o in model.graph.output] == ["y"]


def test_stream_is_lazy_one_batch_at_a_time():
    model, _ = _tiny_model()
    pulled = []

    def batches():
        for i in range(3):
            pulled.append(i)
            yield {"x": np.ones((1, 4), np.float32)}

    it = stream_tensors(model, ["h"], batches())
    next(it)
    assert pulled == [0]


def test_unknown_tensor_is_a_slim_error():
    model, _ = _tiny_model()
    with pytest.raises(SlimError, match=r"tensor\(s\) \['nope'\] are not in the model's graph"):
        with_outputs(model, ["nope"])


def test_streaming_gram_equals_all_at_once():
    rng = np.random.default_rng(2)
    chunks = [rng.standard_normal((2, k, 5)) * [1, 2, 3, 4, 5] + 1.5 for k in (3, 7, 1)]
    acc = GramAccumulator(axis=-1)
    for c in chunks:
        acc.update(c)
    x = np.concatenate([c.reshape(-1, 5) for c in chunks])
    np.testing.assert_allclose(acc.gram, x.T @ x, rtol=1e-12)
    np.testing.assert_allclose(acc.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(acc.covariance, np.cov(x.T, bias=True), rtol=1e-10, atol=1e-12)
    assert acc.count == x.shape[0]


def test_gram_on_channel_axis_and_with_weights():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((2, 3, 4, 4))  # NCHW: channels on axis 1
    acc = GramAccumulator(axis=1)
    acc.update(a[:1])
    acc.update(a[1:])
    x = np.moveaxis(a, 1, -1).reshape(-1, 3)
    np.testing.assert_allclose(acc.covariance, np.cov(x.T, bias=True), atol=1e-12)

    t = rng.standard_normal((2, 6, 3))
    mask = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]], float)
    wacc = GramAccumulator()
    wacc.update(t[:1], mask[:1])
    wacc.update(t[1:], mask[1:])
    kept = t[mask.astype(bool)]
    np.testing.assert_allclose(wacc.gram, kept.T @ kept, atol=1e-12)
    np.testing.assert_allclose(wacc.mean, kept.mean(0), atol=1e-12)


def test_streaming_cross_gram_and_means():
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal((n, 3)) + 2 for n in (4, 9)]
    ys = [rng.standard_normal((n, 2)) - 1 for n in (4, 9)]
    acc = CrossGramAccumulator()
    for x, y in zip(xs, ys):
        acc.update(x, y)
    x, y = np.concatenate(xs), np.concatenate(ys)
    np.testing.assert_allclose(acc.cross, x.T @ y, rtol=1e-12)
    expected = (x - x.mean(0)).T @ (y - y.mean(0)) / len(x)
    np.testing.assert_allclose(acc.cross_covariance, expected, atol=1e-12)
    np.testing.assert_allclose(acc.sum_x / acc.count, x.mean(0), rtol=1e-12)


def test_tap_ignores_extra_feed_keys():
    model, w = _tiny_model()
    tap = TensorTap(model, ["h"])
    x = np.ones((2, 4), np.float32)
    out = tap({"x": x, "unused": np.zeros(1)})
    np.testing.assert_allclose(out["h"], x @ w, rtol=1e-6)
