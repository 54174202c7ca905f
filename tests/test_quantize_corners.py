"""int8 on models found in the wild (issue 10's corpus): opset 11 exports, already-quantized models."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

import onnxslim
from onnxslim.passes.quantize import QuantizeConfig

from test_dynamic import conv_net

FAST = dict(latency=False, progress=None)


def _opset(model, version):
    model = onnx.ModelProto.FromString(model.SerializeToString())
    del model.opset_import[:]
    model.opset_import.append(onnx.helper.make_opsetid("", version))
    return model


def test_opset_11_model_is_upgraded_for_per_channel_qdq():
    model = _opset(conv_net(), 11)
    result = onnxslim.optimize(model, quantize=QuantizeConfig(mode="int8"), **FAST)
    assert result.report["passes"]["quantize"]["prepare"]["opset_upgraded"] == "11 -> 13"
    onnx.checker.check_model(result.model)
    assert any(n.op_type == "DequantizeLinear" for n in result.model.graph.node)
    assert result.report["validation"]["outputs"]["y"]["cosine"] > 0.95


def test_already_quantized_model_is_left_as_it_was():
    dyn = onnxslim.optimize(conv_net(), quantize=QuantizeConfig(mode="int8-dynamic"), validate=False, progress=None).model
    assert any(n.op_type in ("DynamicQuantizeLinear", "MatMulInteger", "ConvInteger") for n in dyn.graph.node)
    result = onnxslim.optimize(dyn, quantize=QuantizeConfig(mode="int8"), **FAST)
    assert "already quantized" in result.report["passes"]["quantize"]["skipped"]
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]  # noqa: E731
    np.testing.assert_allclose(run(result.model), run(dyn), rtol=1e-5, atol=1e-6)


def test_one_sample_cuts_every_batch_dim_and_keeps_scalars():
    from onnx import TensorProto, helper

    from onnxslim.passes.quantize import _one_sample
    from test_dynamic import token_net
    model = token_net()
    model.graph.input.append(helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 8]))
    model.graph.input.append(helper.make_tensor_value_info("sr", TensorProto.INT64, []))
    feed = {"ids": np.zeros((4, 12), np.int64), "state": np.arange(64, dtype=np.float32).reshape(2, 4, 8), "sr": np.array(16000)}
    one = _one_sample(model, feed)
    assert {k: v.shape for k, v in one.items()} == {"ids": (1, 12), "state": (2, 1, 8), "sr": ()}
    np.testing.assert_array_equal(one["state"], feed["state"][:, :1])
