"""--fp16: weights and compute in float16, the model's input and output types unchanged, ops that would
overflow kept in float32 and listed, outputs close to the float32 model's."""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper

from onnxslim.graph import load_model
from onnxslim.passes import cleanup
from onnxslim.passes.rewrite.fp16 import to_fp16
from rewrite_case import _feeds, f32, model, run

MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "models")


def _io_types(m):
    return [(v.name, v.type.tensor_type.elem_type) for v in list(m.graph.input) + list(m.graph.output)]


def _check(m, rel=1e-2):
    h, report = to_fp16(m)
    onnx.checker.check_model(h, full_check=True)
    assert _io_types(h) == _io_types(m)
    floats = [t for t in h.graph.initializer if t.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16)]
    assert sum(t.data_type == TensorProto.FLOAT16 for t in floats) >= 0.9 * len(floats)
    feeds = _feeds(m, 2)
    for want, got in zip(run(m, feeds), run(h, feeds)):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.abs(got - want).max() <= rel * np.abs(want).max()
    assert h.ByteSize() < 0.6 * m.ByteSize()
    return h, report


def test_conv_net_to_fp16():
    m = cleanup.run(load_model(os.path.join(MODELS, "families", "resnet_basic.onnx"))).model
    _, report = _check(m)
    assert report["kept_fp32"] == {} and report["converted_nodes"] == len(m.graph.node)


def test_transformer_mlp_to_fp16():
    m = cleanup.run(load_model(os.path.join(MODELS, "families", "transformer.onnx"))).model
    _check(m)


def test_out_of_range_constant_and_resize_stay_fp32():
    nodes = [helper.make_node("Add", ["x", "big"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Resize", ["b", "", "sc"], ["c"], mode="nearest"),
             helper.make_node("Mul", ["c", "w"], ["y"])]
    inits = {"big": np.full((1, 4, 1, 1), 1e6, np.float32), "sc": np.array([1, 1, 2, 2], np.float32), "w": f32(1, 4, 1, 1)}
    m = model(nodes, [("x", ["N", 4, 3, 3])], [("y", ["N", 4, 6, 6])], inits)
    h, report = to_fp16(m)
    onnx.checker.check_model(h, full_check=True)
    assert report["kept_fp32"] == {"Add": 1, "Resize": 1}
    assert "exceeds the fp16 range" in report["kept_fp32_reasons"]["Add"]
    feeds = _feeds(m, 2)
    np.testing.assert_allclose(run(h, feeds)[0], run(m, feeds)[0], rtol=1e-2, atol=1e-2 * 1e6)


def test_inner_cast_to_float_becomes_cast_to_float16():
    nodes = [helper.make_node("Cast", ["i"], ["a"], to=TensorProto.FLOAT), helper.make_node("Mul", ["a", "x"], ["y"])]
    m = model(nodes, [("i", ["N", 4], TensorProto.INT64), ("x", ["N", 4])], [("y", ["N", 4])])
    h, _ = to_fp16(m)
    onnx.checker.check_model(h, full_check=True)
    assert _io_types(h) == _io_types(m)
    feeds = _feeds(m, 3)
    np.testing.assert_allclose(run(h, feeds)[0], run(m, feeds)[0], rtol=1e-2, atol=1e-1)
