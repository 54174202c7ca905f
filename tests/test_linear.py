"""onnxslim.linear: W [outputs, features] and b read from each op's ONNX layout compute what onnxruntime
computes, and `stored` writes W back to the same layout; runtime.weights_as_inputs feeds such weights."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxslim import linear, runtime

RNG = np.random.default_rng(0)


def _model(op, x_shape, weight, bias, y_shape, **attrs):
    inits = [numpy_helper.from_array(weight.astype(np.float32), "w")]
    inputs = ["x", "w"]
    if bias is not None:
        inits.append(numpy_helper.from_array(bias.astype(np.float32), "b"))
        inputs.append("b")
    node = helper.make_node(op, inputs, ["y"], name="layer", **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _ort(model, x):
    return runtime.run(model, [{"x": x.astype(np.float32)}])[0]["y"]


@pytest.mark.parametrize("trans_b,alpha,beta", [(0, 1.0, 1.0), (1, 0.5, 2.0)])
def test_gemm_is_w_x_plus_b(trans_b, alpha, beta):
    w = RNG.standard_normal((5, 4) if trans_b else (4, 5))
    c = RNG.standard_normal(5)
    attrs = {"transB": trans_b, "alpha": alpha, "beta": beta}
    x = RNG.standard_normal((3, 4))
    W, b = linear.matrix("Gemm", w, attrs), linear.bias("Gemm", c, 5, attrs)
    assert W.shape == (5, 4)
    np.testing.assert_allclose(_ort(_model("Gemm", [3, 4], w, c, [3, 5], **attrs), x), x @ W.T + b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(linear.stored("Gemm", W, w.shape, attrs), w, rtol=1e-12)
    np.testing.assert_allclose(linear.stored_bias("Gemm", b, attrs), c, rtol=1e-12)


def test_matmul_is_w_x():
    w = RNG.standard_normal((4, 6))
    x = RNG.standard_normal((2, 3, 4))
    W = linear.matrix("MatMul", w)
    np.testing.assert_allclose(_ort(_model("MatMul", [2, 3, 4], w, None, [2, 3, 6]), x), x @ W.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(linear.stored("MatMul", W, w.shape), w)


def test_conv_features_are_input_channel_by_kernel_position():
    # a kernel as large as the input: one output position that sees every feature once
    w = RNG.standard_normal((6, 3, 2, 2))
    b = RNG.standard_normal(6)
    x = RNG.standard_normal((1, 3, 2, 2))
    W = linear.matrix("Conv", w)
    assert W.shape == (6, 12) and linear.features_per_channel("Conv", w.shape) == 4
    y = _ort(_model("Conv", [1, 3, 2, 2], w, b, [1, 6, 1, 1]), x)
    np.testing.assert_allclose(y.reshape(6), W @ x.reshape(12) + b, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(linear.stored("Conv", W, w.shape), w)


def test_conv_transpose_gathers_input_channels_per_output_position():
    # a 1x1 input scattered by a 2x2 kernel: output position k of channel o reads every input channel once
    w = RNG.standard_normal((3, 4, 2, 2))
    x = RNG.standard_normal((1, 3, 1, 1))
    W = linear.matrix("ConvTranspose", w)
    assert W.shape == (4, 12)
    y = _ort(_model("ConvTranspose", [1, 3, 1, 1], w, None, [1, 4, 2, 2]), x).reshape(4, 4)
    for k in range(4):  # W's columns for input channel i at kernel position k are i * 4 + k
        np.testing.assert_allclose(y[:, k], W[:, k::4] @ x.reshape(3), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(linear.stored("ConvTranspose", W, w.shape), w)


def test_weights_as_inputs_computes_with_the_fed_weights():
    w, c = RNG.standard_normal((4, 5)), RNG.standard_normal(5)
    model = _model("Gemm", [3, 4], w, c, [3, 5])
    opened = runtime.weights_as_inputs(model, {"y": {1: ("W", TensorProto.FLOAT, [4, 5]), 2: ("B", TensorProto.FLOAT, [5])}})
    assert {t.name for t in opened.graph.initializer} == set()  # the replaced weights are gone
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    sess = runtime.session(opened)
    same = sess.run(None, {"x": x, "W": w.astype(np.float32), "B": c.astype(np.float32)})[0]
    np.testing.assert_allclose(same, _ort(model, x), rtol=1e-6)
    halved = sess.run(None, {"x": x, "W": (w / 2).astype(np.float32), "B": np.zeros(5, np.float32)})[0]
    np.testing.assert_allclose(halved, x @ w / 2, rtol=1e-5, atol=1e-5)
    assert len(onnx.ModelProto.FromString(model.SerializeToString()).graph.initializer) == 2  # input untouched
