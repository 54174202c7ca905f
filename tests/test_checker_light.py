"""onnx.checker leaves large inline weights out (ondisk.check_onnx): the checks still refuse what they did."""
import numpy as np
import onnx
import onnx.helper as h
import pytest

from onnxslim import SlimError, ondisk
from onnxslim.graph import load_model
from onnxslim.pipeline import _check_valid

N = 256  # 256 x 256 floats: 256 KB, above ondisk.HAND_OVER_BYTES


def _model(second_input="w", raw=None):
    w = h.make_tensor("w", onnx.TensorProto.FLOAT, [N, N], np.ones((N, N), np.float32).tobytes(), raw=True)
    if raw is not None:
        w.raw_data = raw
    x = h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, N])
    y = h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, N])
    graph = h.make_graph([h.make_node("MatMul", ["x", second_input], ["y"])], "g", [x], [y], [w])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])


def test_the_large_weight_is_left_out_of_the_check_and_a_valid_model_passes(tmp_path):
    model = _model()
    assert ondisk._left_out(model.graph.initializer[0])
    ondisk.check_onnx(model)
    _check_valid(model)
    onnx.save(model, tmp_path / "m.onnx")
    assert np.array_equal(onnx.numpy_helper.to_array(load_model(tmp_path / "m.onnx").graph.initializer[0]),
                          np.ones((N, N), np.float32))


def test_a_structural_error_is_still_refused(tmp_path):
    bad = _model(second_input="nowhere")
    with pytest.raises(onnx.checker.ValidationError, match="nowhere"):
        ondisk.check_onnx(bad)
    onnx.save(bad, tmp_path / "bad.onnx")
    with pytest.raises(SlimError, match="invalid ONNX model"):
        load_model(tmp_path / "bad.onnx")
    with pytest.raises(SlimError, match="fails onnx.checker"):
        _check_valid(bad)


def test_a_wrong_byte_count_is_still_refused(tmp_path):
    short = _model(raw=np.ones(N * N - 1, np.float32).tobytes())
    with pytest.raises(SlimError, match=r"holds \d+ bytes"):
        _check_valid(short)
    onnx.save(short, tmp_path / "short.onnx")
    with pytest.raises(SlimError, match=r"holds \d+ bytes"):
        load_model(tmp_path / "short.onnx")
