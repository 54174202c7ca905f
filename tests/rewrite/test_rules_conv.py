"""Conv / ConvTranspose fusions and Pad+Conv: per-channel constants go into the layer's weight and bias."""
import numpy as np
from onnx import helper

from rewrite_case import assert_fires, assert_refuses, f32, model, ops

X = ("x", ["N", 3, 8, 8])


def _conv(extra, inits, out_shape=("N", 4, 8, 8), opset=17, op="Conv", **attrs):
    nodes = [helper.make_node(op, ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], **attrs)] + extra
    base = {"w": f32(4, 3, 3, 3) if op == "Conv" else f32(3, 4, 3, 3), "b": f32(4)}
    return model(nodes, [X], [("y", list(out_shape))], {**base, **inits}, opset=opset)


def test_conv_add_per_channel_constant_into_bias():
    m = _conv([helper.make_node("Add", ["k", "c"], ["y"])], {"k": f32(1, 4, 1, 1)})
    out, _ = assert_fires(m, "conv_add")
    assert ops(out) == ["Conv"]


def test_conv_sub_and_3d_constant():
    m = _conv([helper.make_node("Sub", ["c", "k"], ["y"])], {"k": f32(4, 1, 1)})
    assert ops(assert_fires(m, "conv_add")[0]) == ["Conv"]


def test_conv_add_refuses_per_pixel_constant():
    m = _conv([helper.make_node("Add", ["c", "k"], ["y"])], {"k": f32(1, 1, 8, 8)})
    assert_refuses(m, "conv_add", "not per output channel")


def test_conv_add_refuses_when_conv_output_is_reused():
    nodes = [helper.make_node("Add", ["c", "k"], ["a"]), helper.make_node("Mul", ["a", "c"], ["y"])]
    m = _conv(nodes, {"k": f32(1, 4, 1, 1)})
    assert_refuses(m, "conv_add", "other consumers")


def test_conv_mul_and_div_scale_the_weight():
    nodes = [helper.make_node("Mul", ["c", "s"], ["d"]), helper.make_node("Div", ["d", "t"], ["y"])]
    m = _conv(nodes, {"s": f32(1, 4, 1, 1), "t": np.abs(f32(4, 1, 1)) + 0.5})
    out, _ = assert_fires(m, "conv_mul", times=2, rtol=1e-4, atol=1e-5)
    assert ops(out) == ["Conv"]


def test_grouped_conv_mul():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], group=3), helper.make_node("Mul", ["c", "s"], ["y"])]
    m = model(nodes, [X], [("y", ["N", 6, 6, 6])], {"w": f32(6, 1, 3, 3), "s": f32(6, 1, 1)})
    assert ops(assert_fires(m, "conv_mul", rtol=1e-4, atol=1e-5)[0]) == ["Conv"]


def test_grouped_convtranspose_mul_add_bn():
    w = f32(4, 3, 2, 2)  # [Cin, Cout/g, k, k] with group 2: 6 output channels
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["c"], group=2, strides=[2, 2]),
             helper.make_node("BatchNormalization", ["c", "g", "be", "mu", "var"], ["d"]),
             helper.make_node("Mul", ["d", "s"], ["e"]), helper.make_node("Add", ["e", "k"], ["y"])]
    inits = {"w": w, "g": f32(6), "be": f32(6), "mu": f32(6), "var": np.abs(f32(6)) + 0.5,
             "s": f32(1, 6, 1, 1), "k": f32(6, 1, 1)}
    m = model(nodes, [("x", ["N", 4, 5, 5])], [("y", ["N", 6, 10, 10])], inits)
    out, counts = assert_fires(m, "conv_mul", rtol=1e-4, atol=1e-4)
    assert counts["convtranspose_bn"] == 1 and counts["conv_add"] == 1
    assert ops(out) == ["ConvTranspose"]


def test_pad_into_conv_pads_opset17_and_opset10():
    nodes = [helper.make_node("Pad", ["x", "p"], ["q"], mode="constant"), helper.make_node("Conv", ["q", "w"], ["y"])]
    pads = np.array([0, 0, 1, 2, 0, 0, 2, 1], dtype=np.int64)
    m = model(nodes, [X], [("y", ["N", 4, 9, 9])], {"p": pads, "w": f32(4, 3, 3, 3)})
    assert ops(assert_fires(m, "pad_conv", rtol=1e-4, atol=1e-5)[0]) == ["Conv"]
    nodes = [helper.make_node("Pad", ["x"], ["q"], pads=pads.tolist()), helper.make_node("Conv", ["q", "w"], ["y"])]
    m = model(nodes, [X], [("y", ["N", 4, 9, 9])], {"w": f32(4, 3, 3, 3)}, opset=10)
    assert ops(assert_fires(m, "pad_conv", rtol=1e-4, atol=1e-5)[0]) == ["Conv"]


def test_pad_conv_refuses_nonzero_value_and_channel_pads():
    nodes = [helper.make_node("Pad", ["x", "p", "v"], ["q"]), helper.make_node("Conv", ["q", "w"], ["y"])]
    pads = np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64)
    m = model(nodes, [X], [("y", ["N", 4, 8, 8])], {"p": pads, "v": np.array(1.0, np.float32), "w": f32(4, 3, 3, 3)})
    assert_refuses(m, "pad_conv", "not zero")
    pads = np.array([0, 1, 0, 0, 0, 0, 0, 0], dtype=np.int64)
    m = model(nodes[:1] + [helper.make_node("Conv", ["q", "w"], ["y"])], [X], [("y", ["N", 4, 6, 6])],
              {"p": pads, "v": np.array(0.0, np.float32), "w": f32(4, 4, 3, 3)})
    assert_refuses(m, "pad_conv", "batch or channel")
