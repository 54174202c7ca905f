"""int8 quantization pass on tiny hand-built graphs: QDQ structure per target, CLE exactness, bias correction,
entropy thresholds, accuracy fallback, dynamic mode and the report."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxslim.calibration import ArrayDataset
from onnxslim.context import Context
from onnxslim.errors import SlimError
from onnxslim.graph import to_graph, to_model
from onnxslim.passes.quantize import QuantizeConfig, equalize, ranges, run
from onnxslim.progress import silent


def conv_node(name, x, y, w, b=None, group=1, pads=1, k=3):
    ins = [x, f"{name}.w"] + ([f"{name}.b"] if b is not None else [])
    return helper.make_node("Conv", ins, [y], name=name, group=group, pads=[pads] * 4, kernel_shape=[k, k])


def build(layers, act="Relu", input_channels=3, size=8, classes=None, seed=0):
    """Chain of convs; layers = [(out_channels, group)], `act` between them; optional GAP+Gemm classifier head."""
    rng = np.random.default_rng(seed)
    nodes, inits, x, c = [], [], "x", input_channels
    for i, (out, group) in enumerate(layers):
        w = rng.standard_normal((out, c // group, 3, 3)).astype(np.float32) * 0.4
        w *= rng.uniform(0.05, 3.0, size=(out, 1, 1, 1)).astype(np.float32)  # uneven channel ranges, as after BN folding
        b = rng.standard_normal(out).astype(np.float32) * 0.1
        inits += [numpy_helper.from_array(w, f"c{i}.w"), numpy_helper.from_array(b, f"c{i}.b")]
        nodes.append(conv_node(f"c{i}", x, f"c{i}.y", w, b, group=group))
        x, c = f"c{i}.y", out
        if i < len(layers) - 1 and act:
            if act == "Relu6":
                inits += [numpy_helper.from_array(np.array(0, np.float32), f"a{i}.lo"), numpy_helper.from_array(np.array(6, np.float32), f"a{i}.hi")]
                nodes.append(helper.make_node("Clip", [x, f"a{i}.lo", f"a{i}.hi"], [f"a{i}.y"], name=f"a{i}"))
            else:
                nodes.append(helper.make_node(act, [x], [f"a{i}.y"], name=f"a{i}"))
            x = f"a{i}.y"
    if classes:
        nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="gap"))
        nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flat"))
        inits += [numpy_helper.from_array(rng.standard_normal((classes, c)).astype(np.float32), "fc.w"),
                  numpy_helper.from_array(np.zeros(classes, np.float32), "fc.b")]
        nodes.append(helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["y"], name="fc", transB=1))
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes])
    else:
        nodes.append(helper.make_node("Identity", [x], ["y"], name="out"))
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", c, size, size])
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", input_channels, size, size])], [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def data(model, n=32, seed=1, offset=0.5):
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:]
    x = np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32) + offset
    return ArrayDataset({"x": x}, "test arrays")


def outputs(model, x):
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {"x": x})[0]


def ctx_for(model, **kw):
    return Context(calibration=data(model, **kw), progress=silent)


FAST = dict(measure_latency=False)


def inits_of(model):
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def producers(model):
    return {o: n for n in model.graph.node for o in n.output}


def weight_dq(model, conv):
    return producers(model).get(conv.input[1])


# --- structure per target ------------------------------------------------------------------------------

def test_onnxruntime_target_per_channel_weights_on_axis0():
    model = build([(16, 1), (16, 16), (24, 1)], classes=10)
    result = run(model, QuantizeConfig(calib_method="minmax", **FAST), ctx_for(model))
    q = result.model
    onnx.checker.check_model(q)
    inits = inits_of(q)
    convs = [n for n in q.graph.node if n.op_type == "Conv"]
    assert len(convs) == 3
    for conv in convs:
        dq = weight_dq(q, conv)
        assert dq is not None and dq.op_type == "DequantizeLinear"
        assert inits[dq.input[0]].dtype == np.int8
        scale = inits[dq.input[1]]
        assert scale.shape == (inits[dq.input[0]].shape[0],)  # one scale per output channel
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        assert axis == 0
        assert np.all(inits[dq.input[2]] == 0)  # symmetric weights
    assert [i.name for i in q.graph.input] == ["x"] and [o.name for o in q.graph.output] == ["y"]
    x = data(model, n=4, seed=5).arrays["x"]
    assert outputs(q, x).shape == outputs(model, x).shape


def test_tensorrt_target_symmetric_no_output_qdq_and_narrow_convs_in_float():
    model = build([(16, 1), (16, 16), (24, 1)], classes=10)  # first conv reads 3 channels: no TensorRT int8 kernel
    result = run(model, QuantizeConfig(target="tensorrt", calib_method="minmax", **FAST), ctx_for(model))
    q, report = result.model, result.report
    inits = inits_of(q)
    prods = producers(q)
    left = {e["node"] for e in report["left_in_float"]}
    assert left == {"c0"} and "3 input" in report["left_in_float"][0]["reason"]
    for node in q.graph.node:
        if node.op_type == "QuantizeLinear":
            assert inits[node.input[2]].dtype == np.int8 and np.all(inits[node.input[2]] == 0)  # symmetric int8 activations
        if node.op_type == "DequantizeLinear" and node.input[0] in inits and inits[node.input[0]].dtype == np.int8:
            assert np.all(inits[node.input[2]] == 0)
    for conv in (n for n in q.graph.node if n.op_type == "Conv"):
        quantized_weight = prods.get(conv.input[1]) is not None and prods[conv.input[1]].op_type == "DequantizeLinear"
        if conv.name == "c0":
            assert not quantized_weight
            continue
        assert quantized_weight
        dq = prods[conv.input[1]]
        assert next((a.i for a in dq.attribute if a.name == "axis"), 1) == 0
        assert inits[dq.input[1]].size == inits[dq.input[0]].shape[0]
        # TensorRT fuses what follows a Conv: no QuantizeLinear on its output
        assert all(c.op_type != "QuantizeLinear" for c in q.graph.node if conv.output[0] in c.input)
    # ReLU stays explicit for TensorRT
    assert any(n.op_type == "Relu" for n in q.graph.node)


# --- cross-layer equalization --------------------------------------------------------------------------

@pytest.mark.parametrize("layers", [[(8, 1), (8, 1), (6, 1)], [(8, 1), (8, 8), (12, 1)], [(16, 1), (16, 4), (8, 1)]])
def test_cle_is_an_exact_rewrite_for_relu_chains(layers):
    model = build(layers, act="Relu")
    graph = to_graph(model)
    report = equalize.equalize(graph)
    assert report["pairs"] == 2 and report["exact"]
    assert report["median_channel_range_spread_after"] < report["median_channel_range_spread_before"]
    eq = to_model(graph, like=model)
    x = data(model, n=4).arrays["x"]
    np.testing.assert_allclose(outputs(eq, x), outputs(model, x), rtol=1e-4, atol=1e-4)
    # weights really changed
    before, after = inits_of(model), inits_of(eq)
    assert not np.allclose(before["c0.w"], after["c0.w"])


def test_cle_equalizes_ranges_of_a_pair():
    model = build([(8, 1), (8, 1)], act="Relu")
    graph = to_graph(model)
    equalize.equalize(graph, iterations=1)
    w = inits_of(to_model(graph, like=model))
    r1 = np.abs(w["c0.w"]).reshape(8, -1).max(1)
    r2 = np.abs(w["c1.w"]).transpose(1, 0, 2, 3).reshape(8, -1).max(1)
    np.testing.assert_allclose(r1, r2, rtol=1e-5)


def test_cle_skips_relu6_unless_asked_and_says_so():
    model = build([(8, 1), (8, 8), (8, 1)], act="Relu6")
    graph = to_graph(model)
    report = equalize.equalize(graph)
    assert report["pairs"] == 0 and report["skipped_count"] == 2 and "ReLU6" in report["skipped"][0]["reason"]
    graph = to_graph(model)
    report = equalize.equalize(graph, relu6_as_relu=True)
    assert report["pairs"] == 2 and not report["exact"]


# --- calibration methods -------------------------------------------------------------------------------

def test_entropy_threshold_clips_long_tails_and_keeps_uniform_data():
    rng = np.random.default_rng(0)
    tail = np.concatenate([rng.standard_normal(200000), [40.0, -38.0]])  # two outliers far out
    hist, _ = np.histogram(np.abs(tail), bins=2048, range=(0, 40.0))
    t = ranges.entropy_threshold(hist.astype(float), 40.0)
    assert 2.0 < t < 10.0
    flat = rng.uniform(-1, 1, 200000)
    hist, _ = np.histogram(np.abs(flat), bins=2048, range=(0, 1.0))
    assert ranges.entropy_threshold(hist.astype(float), 1.0) > 0.9


def test_methods_give_different_ranges():
    model = build([(8, 1), (8, 1)], act="Relu")
    ds = data(model, n=64)
    ds.arrays["x"][0, 0, 0, 0] = 60.0  # one outlier pixel
    from onnxslim.passes.quantize import backend
    names = backend.float_activations(model)
    stats = ranges.collect(model, names, ds, histogram=True)
    mm = ranges.ranges_from_stats(stats, "minmax", symmetric=False)
    en = ranges.ranges_from_stats(stats, "entropy", symmetric=False)
    pc = ranges.ranges_from_stats(stats, "percentile", symmetric=False, percentile=99.9)
    assert mm["x"][1] == pytest.approx(60.0)
    assert en["x"][1] < 30 and pc["x"][1] < 30


# --- bias correction -----------------------------------------------------------------------------------

def _mean_error(model, qmodel, x):
    return float(np.abs((outputs(qmodel, x) - outputs(model, x)).mean(axis=(0, 2, 3))).mean())


def test_bias_correction_reduces_mean_output_error():
    # per-tensor weights on a depthwise layer with very uneven channels: a large systematic weight error
    model = build([(8, 1), (8, 8), (8, 1)], act=None, seed=3)
    cfg = dict(calib_method="minmax", per_channel=False, cle=False, reduce_range=False, **FAST)
    ctx = ctx_for(model, n=64, offset=2.0)
    plain = run(model, QuantizeConfig(bias_correction=False, **cfg), ctx).model
    corrected = run(model, QuantizeConfig(bias_correction=True, **cfg), ctx)
    assert corrected.report["bias_correction"]["corrected"] == 3
    x = ctx.calibration.arrays["x"]
    assert _mean_error(model, corrected.model, x) < 0.7 * _mean_error(model, plain, x)


# --- accuracy-aware fallback ---------------------------------------------------------------------------

def test_fallback_meets_a_tolerance_plain_int8_misses():
    model = build([(8, 1), (8, 8), (16, 1), (16, 16), (8, 1)], act="Relu", seed=4, classes=6)
    cfg = dict(calib_method="minmax", per_channel=False, cle=False, bias_correction=False, **FAST)
    ctx = ctx_for(model, n=32)
    plain = run(model, QuantizeConfig(**cfg), ctx).report
    error = plain["fidelity"]["outputs"]["y"]["relative_error"]
    tolerance = error / 3
    result = run(model, QuantizeConfig(tolerance=tolerance, **cfg), ctx)
    fb = result.report["fallback"]
    assert fb["error_before"] > tolerance
    assert fb["met"] and fb["error_after"] <= tolerance
    assert result.report["fidelity"]["outputs"]["y"]["relative_error"] <= tolerance
    kept = set(fb["kept_in_float"])
    assert kept and {e["node"] for e in result.report["left_in_float"]} >= kept
    float_convs = [n for n in result.model.graph.node if n.op_type in ("Conv", "Gemm") and n.name in kept]
    prods = producers(result.model)
    for node in float_convs:
        assert node.input[1] not in prods or prods[node.input[1]].op_type != "DequantizeLinear"


# --- report, modes, errors -----------------------------------------------------------------------------

def test_report_is_json_and_has_fidelity_size_latency():
    model = build([(16, 1), (16, 16), (16, 1)], classes=10)
    result = run(model, QuantizeConfig(latency_runs=3), ctx_for(model))
    rep = result.report
    json.dumps(rep)
    out = rep["fidelity"]["outputs"]["y"]
    assert out["sqnr_db"] > 10 and 0 <= out["top1_agreement"] <= 1
    assert 0 < rep["size_ratio"] < 1
    assert rep["latency"]["ratio"] > 0
    assert rep["calibration"]["real"] and "warning" not in rep


def test_random_calibration_is_flagged():
    model = build([(8, 1), (8, 1)])
    rep = run(model, QuantizeConfig(**FAST), Context(progress=silent)).report
    assert rep["calibration"]["real"] is False and "random" in rep["warning"]


def test_dynamic_mode_quantizes_matmul_weights():
    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((32, 64)).astype(np.float32), rng.standard_normal((64, 16)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="m1"), helper.make_node("Relu", ["h"], ["r"], name="r"),
         helper.make_node("MatMul", ["r", "w2"], ["y"], name="m2")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 32])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    ds = ArrayDataset({"x": rng.standard_normal((16, 32)).astype(np.float32)}, "t")
    result = run(model, QuantizeConfig(mode="int8-dynamic", **FAST), Context(calibration=ds, progress=silent))
    ops = {n.op_type for n in result.model.graph.node}
    assert "MatMul" not in ops and ({"MatMulInteger", "DynamicQuantizeMatMul"} & ops or "DynamicQuantizeLinear" in ops)
    assert result.report["fidelity"]["outputs"]["y"]["sqnr_db"] > 25


@pytest.mark.parametrize("cfg,match", [(dict(mode="int2"), "int8"), (dict(mode="int4", block_size=48), "block-size"), (dict(calib_method="kl"), "calib-method"),
                                       (dict(target="tflite"), "target"), (dict(tolerance=-1.0), "tolerance")])
def test_bad_config(cfg, match):
    model = build([(8, 1)])
    with pytest.raises(SlimError, match=match):
        run(model, QuantizeConfig(**cfg), Context(progress=silent))


def test_batchnorm_models_are_folded_first():
    rng = np.random.default_rng(0)
    c = 8
    inits = [numpy_helper.from_array(rng.standard_normal((c, 3, 3, 3)).astype(np.float32), "w0"),
             numpy_helper.from_array(rng.uniform(0.5, 2, c).astype(np.float32), "g"), numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal(c).astype(np.float32), "m"), numpy_helper.from_array(rng.uniform(0.5, 2, c).astype(np.float32), "v"),
             numpy_helper.from_array(rng.standard_normal((4, c, 1, 1)).astype(np.float32), "w1")]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], name="c0", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c0", "g", "b", "m", "v"], ["bn"], name="bn"),
             helper.make_node("Relu", ["bn"], ["r"], name="r"), helper.make_node("Conv", ["r", "w1"], ["y"], name="c1")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    # quantize requires a FOLDED graph: the pipeline's step runner runs cleanup first (the pass itself does not)
    from onnxslim.passes.quantize import PASS
    from onnxslim.pipeline import run_steps
    report = {"passes": {}}
    quantized, _ = run_steps(model, [(PASS, QuantizeConfig(**FAST))], ctx_for(model), report)
    ops = [n.op_type for n in quantized.graph.node]
    assert "BatchNormalization" not in ops and ops.count("Conv") == 2
    result = type("Result", (), {"report": report["passes"]["quantize"]})
    assert result.report["cle"]["pairs"] == 1  # the BN-folded Conv -> ReLU -> Conv chain is equalized
    assert result.report["fidelity"]["outputs"]["y"]["sqnr_db"] > 20
