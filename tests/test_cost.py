"""MACs and params from cost.py against numbers computed by hand from the op definitions."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxslim.cost import model_cost, node_costs
from onnxslim.ops.macs import conv_output_spatial
from onnxslim.errors import SlimError


def _model(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
                              [numpy_helper.from_array(np.zeros(s, np.float32), n) for n, s in inits])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def _one(model, input_shapes=None):
    costs = node_costs(model, input_shapes)
    return {c.name: c for c in costs}


@pytest.mark.parametrize("attrs, w_shape, x_shape, out_hw", [
    # plain 3x3, pad 1: 1*16*8*8 outputs, each 3*3*3 MACs
    (dict(pads=[1, 1, 1, 1]), (16, 3, 3, 3), (1, 3, 8, 8), (8, 8)),
    # strided, no pad: (9-3)//2+1 = 4
    (dict(strides=[2, 2]), (16, 3, 3, 3), (1, 3, 9, 9), (4, 4)),
    # asymmetric pads, dilation 2: span 5; h: (10+1+0-5)//1+1 = 7, w: (10+0+2-5)+1 = 8
    (dict(pads=[1, 0, 0, 2], dilations=[2, 2]), (4, 3, 3, 3), (1, 3, 10, 10), (7, 8)),
    # auto_pad SAME_UPPER stride 2 on 15 -> ceil(15/2) = 8
    (dict(auto_pad="SAME_UPPER", strides=[2, 2]), (4, 3, 3, 3), (1, 3, 15, 15), (8, 8)),
    (dict(auto_pad="VALID"), (4, 3, 5, 5), (1, 3, 12, 12), (8, 8)),
])
def test_conv_macs_match_hand_count(attrs, w_shape, x_shape, out_hw):
    m = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv", **attrs)],
               [("x", x_shape)], ["y"], [("w", w_shape)])
    c = _one(m)["conv"]
    m_out, c_in, kh, kw = w_shape
    assert c.output_shape == (1, m_out) + out_hw
    assert c.macs == m_out * out_hw[0] * out_hw[1] * c_in * kh * kw
    assert c.params == int(np.prod(w_shape))


def test_grouped_and_depthwise_conv():
    # grouped: 8 -> 12 channels in 4 groups: each output sums over 2 input channels x 3x3
    grouped = _model([helper.make_node("Conv", ["x", "w", "b"], ["y"], name="g", group=4, pads=[1, 1, 1, 1])],
                     [("x", (1, 8, 6, 6))], ["y"], [("w", (12, 2, 3, 3)), ("b", (12,))])
    c = _one(grouped)["g"]
    assert c.macs == 12 * 6 * 6 * 2 * 9
    assert c.params == 12 * 2 * 9 + 12
    # depthwise, strided: 32 channels, 5x5, stride 2 on 16x16 with pad 2 -> 8x8
    dw = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="dw", group=32, strides=[2, 2], pads=[2, 2, 2, 2])],
                [("x", (1, 32, 16, 16))], ["y"], [("w", (32, 1, 5, 5))])
    c = _one(dw)["dw"]
    assert c.output_shape == (1, 32, 8, 8)
    assert c.macs == 32 * 8 * 8 * 25


def test_conv_output_spatial_formula():
    assert conv_output_spatial((224, 224), (3, 3), strides=[2, 2], pads=[0, 0, 1, 1]) == (112, 112)
    assert conv_output_spatial((7,), (3,), auto_pad="SAME_LOWER", strides=[3]) == (3,)
    assert conv_output_spatial((7,), (3,), auto_pad=b"VALID", dilations=[2]) == (3,)


def test_conv_behind_runtime_computed_padding():
    # "same" padding computed by a constant subgraph (as torch exports EfficientNet): shape inference alone
    # cannot see the pads, cost.py folds the subgraph
    pads_half = numpy_helper.from_array(np.array([0, 0, 0, 1], np.int64), "half")
    nodes = [
        helper.make_node("Constant", [], ["one"], value=numpy_helper.from_array(np.array([1], np.int64))),
        helper.make_node("Mul", ["half", "one"], ["h2"]),
        helper.make_node("Constant", [], ["tail"], value=numpy_helper.from_array(np.array([0, 0, 0, 1], np.int64))),
        helper.make_node("Concat", ["h2", "tail"], ["pads8"], axis=0),
        helper.make_node("Reshape", ["pads8", "shape24"], ["p24"]),
        helper.make_node("Transpose", ["p24"], ["p42"], perm=[1, 0]),
        helper.make_node("Reshape", ["p42", "shape8"], ["pads"]),
        helper.make_node("Pad", ["x", "pads"], ["xp"], name="pad"),
        helper.make_node("Conv", ["xp", "w"], ["y"], name="conv", strides=[2, 2]),
    ]
    m = _model(nodes, [("x", (1, 3, 8, 8))], ["y"], [("w", (4, 3, 3, 3))])
    m.graph.initializer.extend([pads_half, numpy_helper.from_array(np.array([2, 4], np.int64), "shape24"),
                                numpy_helper.from_array(np.array([8], np.int64), "shape8")])
    costs = _one(m)
    # concat [0,0,0,1,0,0,0,1] -> [2,4] -> T -> pads [0,0,0,0,0,0,1,1] -> 9x9, stride 2 -> 4x4
    assert costs["pad"].output_shape == (1, 3, 9, 9)
    assert costs["conv"].macs == 4 * 4 * 4 * 27
    assert model_cost(m)["unknown_macs_nodes"] == []


def test_conv_transpose_macs():
    # every input element meets out_channels/group * kH * kW weights
    m = _model([helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="ct", strides=[2, 2])],
               [("x", (1, 8, 5, 5))], ["y"], [("w", (8, 6, 3, 3))])
    assert _one(m)["ct"].macs == 8 * 5 * 5 * 6 * 9
    grouped = _model([helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="ct", group=2)],
                     [("x", (1, 8, 5, 5))], ["y"], [("w", (8, 3, 2, 2))])
    c = _one(grouped)["ct"]
    assert c.output_shape == (1, 6, 6, 6)
    assert c.macs == 8 * 5 * 5 * 3 * 4


def test_gemm_macs_with_trans_b():
    m = _model([helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1)],
               [("x", ("N", 64))], ["y"], [("w", (10, 64)), ("b", (10,))])
    c = _one(m)["fc"]
    assert c.macs == 1 * 64 * 10
    assert c.params == 650
    assert _one(m, {"x": (4, 64)})["fc"].macs == 4 * 64 * 10


def test_matmul_3d_by_2d_and_batched_activations():
    m = _model([helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
                helper.make_node("Transpose", ["h"], ["ht"], perm=[0, 2, 1]),
                helper.make_node("MatMul", ["h", "ht"], ["scores"], name="qk")],
               [("x", ("batch", 7, 16))], ["scores"], [("w", (16, 12))])
    costs = _one(m)
    assert costs["proj"].macs == 7 * 16 * 12
    assert costs["proj"].params == 16 * 12
    # [1,7,12] x [1,12,7]: 7*7 outputs of 12 MACs each, no params
    assert costs["qk"].macs == 7 * 7 * 12
    assert costs["qk"].params == 0


def test_matmul_broadcast_batch_dims():
    m = _model([helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")],
               [("a", (2, 1, 3, 4)), ("b", (5, 4, 6))], ["y"])
    c = _one(m)["mm"]
    assert c.output_shape == (2, 5, 3, 6)
    assert c.macs == 2 * 5 * 3 * 6 * 4


def test_einsum_macs():
    m = _model([helper.make_node("Einsum", ["a", "b"], ["y"], name="e", equation="bij,bjk->bik")],
               [("a", (1, 3, 4)), ("b", (1, 4, 5))], ["y"])
    assert _one(m)["e"].macs == 3 * 4 * 5
    m = _model([helper.make_node("Einsum", ["a", "b"], ["y"], name="e", equation="...ij,jk->...ik")],
               [("a", (1, 2, 3, 4)), ("b", (4, 5))], ["y"])
    assert _one(m)["e"].macs == 2 * 3 * 4 * 5


def test_other_ops_count_zero_macs():
    m = _model([helper.make_node("Relu", ["x"], ["r"], name="relu"),
                helper.make_node("Add", ["r", "bias"], ["y"], name="add")],
               [("x", (1, 8))], ["y"], [("bias", (8,))])
    costs = _one(m)
    assert costs["relu"].macs == 0 and costs["add"].macs == 0
    assert costs["add"].params == 8


def test_shared_initializer_counted_once():
    m = _model([helper.make_node("MatMul", ["x", "w"], ["h"], name="a"),
                helper.make_node("MatMul", ["h", "w"], ["y"], name="b")],
               [("x", (1, 8))], ["y"], [("w", (8, 8))])
    costs = _one(m)
    assert costs["a"].params == 64 and costs["b"].params == 0
    total = model_cost(m)
    assert total["params"] == 64
    assert total["macs"] == 2 * 64


def test_params_through_dequantize_and_constant_nodes():
    wq = numpy_helper.from_array(np.zeros((4, 8), np.int8), "wq")
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "scale")
    nodes = [helper.make_node("DequantizeLinear", ["wq", "scale"], ["w"]),
             helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.ones((1, 8), np.float32))),
             helper.make_node("Add", ["h", "c"], ["y"], name="add")]
    m = _model(nodes, [("x", (1, 4))], ["y"])
    m.graph.initializer.extend([wq, scale])
    costs = _one(m)
    assert costs["mm"].params == 32 + 1  # int8 weight and its scale, attributed to the MatMul
    assert costs["mm"].macs == 4 * 8
    assert costs["add"].params == 8
    assert model_cost(m)["params"] == 41


def test_int64_shape_constants_are_not_params():
    m = _model([helper.make_node("Reshape", ["x", "shape"], ["y"], name="r")], [("x", (2, 6))], ["y"])
    m.graph.initializer.append(numpy_helper.from_array(np.array([3, 4], np.int64), "shape"))
    assert model_cost(m)["params"] == 0


def test_dynamic_non_batch_dim_leaves_macs_unknown_not_an_error():
    m = _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
               [("x", ("batch", "seq", 16))], ["y"], [("w", (16, 4))])
    cost = model_cost(m)  # symbolic sequence: params known, the MatMul's MACs unknown
    assert cost["params"] == 16 * 4 and cost["unknown_macs_nodes"] == ["mm"] and cost["macs"] == 0
    assert model_cost(m, {"x": (1, 10, 16)})["macs"] == 10 * 16 * 4


def test_unknown_shapes_are_reported_not_zero():
    # the Reshape target comes from a graph input, so nothing after it has a known shape
    m = onnx.helper.make_model(helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["xr"]),
         helper.make_node("Conv", ["xr", "w"], ["y"], name="conv")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 48)),
         helper.make_tensor_value_info("shape", TensorProto.INT64, (4,))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.zeros((2, 3, 3, 3), np.float32), "w")]),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    costs = _one(m)
    assert costs["conv"].macs is None
    assert costs["conv"].params == 54
    total = model_cost(m)
    assert total["unknown_macs_nodes"] == ["conv"]
    assert total["macs"] == 0
    assert any(d["name"] == "conv" and d["macs"] is None for d in total["per_node"])


def test_model_cost_is_json_ready_and_leaves_model_untouched():
    import json
    m = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")],
               [("x", ("N", 3, 4, 4))], ["y"], [("w", (2, 3, 1, 1))])
    before = m.SerializeToString()
    report = model_cost(m)
    json.dumps(report)
    assert report["per_node"] == [{"name": "conv", "op_type": "Conv", "macs": 2 * 16 * 3, "params": 6,
                                   "output_shape": [1, 2, 4, 4]}]
    assert m.SerializeToString() == before


def test_committed_digits_model_has_known_conv_costs():
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "models" / "digits_resnet.onnx"
    if not path.exists():
        pytest.skip("models/digits_resnet.onnx not built")
    model = onnx.load(str(path))
    report = model_cost(model)
    assert report["unknown_macs_nodes"] == []
    assert report["macs"] > 0
    inits = sum(int(np.prod(t.dims)) for t in model.graph.initializer if t.data_type != TensorProto.INT64)
    assert report["params"] >= inits
