"""Dynamic dims everywhere (issue 10): every pass runs on models with symbolic H/W or sequence dims without
--input-shape; the shapes of the steps that run the model are chosen and reported with their source."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxslim
from onnxslim import runshapes
from onnxslim.calibration import load_calibration
from onnxslim.cost import model_cost
from onnxslim.errors import FIDELITY_FAILED, SlimError
from onnxslim.passes.lowrank import LowRankConfig
from onnxslim.passes.prune import PruneConfig
from onnxslim.passes.quantize import QuantizeConfig

from oracle import check_oracle

FAST = dict(latency=False, progress=None)


def _init(rng, name, shape, scale=0.3):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def conv_net() -> onnx.ModelProto:
    """x [batch, 3, h, w] -> Conv s2 -> Relu -> Conv -> Relu -> Conv s2 -> GlobalAveragePool -> Flatten -> Gemm."""
    rng = np.random.default_rng(0)
    inits = [_init(rng, "w1", (16, 3, 3, 3)), _init(rng, "b1", (16,)), _init(rng, "w2", (24, 16, 3, 3)),
             _init(rng, "b2", (24,)), _init(rng, "w3", (32, 24, 3, 3)), _init(rng, "fc", (10, 32)), _init(rng, "fb", (10,))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1] * 4, strides=[2, 2]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1] * 4),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("Conv", ["r2", "w3"], ["c3"], name="conv3", pads=[1] * 4, strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["c3"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fc", "fb"], ["y"], name="fc", transB=1)]
    g = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "h", "w"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def token_net() -> onnx.ModelProto:
    """ids [batch, sequence] int64 -> Gather(embedding 100x32) -> MatMul 32x64 -> Add -> Relu -> MatMul 64x32
    -> Add residual -> self-attention-like scores MatMul(h, h^T) -> Softmax -> MatMul -> ReduceMean over tokens."""
    rng = np.random.default_rng(1)
    inits = [_init(rng, "emb", (100, 32)), _init(rng, "w1", (32, 64)), _init(rng, "b1", (64,)), _init(rng, "w2", (64, 32))]
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["e"], name="embed"),
             helper.make_node("MatMul", ["e", "w1"], ["m1"], name="mm1"),
             helper.make_node("Add", ["m1", "b1"], ["a1"], name="add1"),
             helper.make_node("Relu", ["a1"], ["r1"], name="relu"),
             helper.make_node("MatMul", ["r1", "w2"], ["m2"], name="mm2"),
             helper.make_node("Add", ["m2", "e"], ["h"], name="residual"),
             helper.make_node("Transpose", ["h"], ["ht"], name="t", perm=[0, 2, 1]),
             helper.make_node("MatMul", ["h", "ht"], ["s"], name="scores"),
             helper.make_node("Softmax", ["s"], ["p"], name="softmax", axis=-1),
             helper.make_node("MatMul", ["p", "h"], ["o"], name="mix"),
             helper.make_node("ReduceMean", ["o"], ["y"], name="pool", axes=[1], keepdims=0)]
    g = helper.make_graph(nodes, "tokens", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "sequence"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 32])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=9)


def _run(model, feed):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)


PASSES = {
    "bare": {},
    "prune l1": {"prune": PruneConfig(ratio=0.3)},
    "target macs": {"prune": PruneConfig(target_macs=0.7)},
    "lowrank energy": {"lowrank": LowRankConfig(energy=0.9)},
    "int8-dynamic": {"quantize": QuantizeConfig(mode="int8-dynamic")},
    "int8 static": {"quantize": QuantizeConfig(mode="int8")},
}


@pytest.mark.parametrize("name", list(PASSES))
@pytest.mark.parametrize("build", [conv_net, token_net], ids=["conv_hw", "token_sequence"])
def test_every_pass_runs_without_input_shape(build, name):
    model = build()
    result = onnxslim.optimize(model, **PASSES[name], **FAST)
    onnx.checker.check_model(result.model)
    val = result.report["validation"]
    shapes = val["input_shapes"]
    src = shapes[model.graph.input[0].name]
    assert src["source"] == "auto" and src["shape"][0] == 1  # batch 1, the other dims a size that runs
    assert val["macs"]["before"] > 0 and not val["macs"].get("unknown_nodes")
    assert val["outputs"]["y"]["cosine"] > (0.999 if name in ("bare", "int8-dynamic") else 0.3)
    # the result keeps its symbolic dims and runs at another size than the one validated
    dims = [d.dim_param or d.dim_value for d in result.model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    other = {"x": np.ones((2, 3, 40, 56), np.float32)} if build is conv_net else {"ids": np.ones((2, 7), np.int64)}
    assert _run(result.model, other)[0].shape == _run(model, other)[0].shape


@pytest.mark.parametrize("shapes", [{"x": (1, 3, 24, 40)}, {"x": (2, 3, 33, 17)}])
def test_pruned_conv_net_equals_the_oracle_at_any_size(shapes):
    # analysis and pruning never see a size; the oracle checks the result at two
    check_oracle(conv_net(), seed=3, shapes=shapes)


@pytest.mark.parametrize("shapes", [{"ids": (1, 5)}, {"ids": (3, 19)}])
def test_pruned_token_net_equals_the_oracle_at_any_length(shapes):
    check_oracle(token_net(), seed=4, shapes=shapes)


def test_bare_output_equal_at_other_sizes():
    model = conv_net()
    out = onnxslim.optimize(model, validate=False, progress=None).model
    for shape in [(1, 3, 8, 8), (3, 3, 31, 45)]:
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        np.testing.assert_allclose(_run(out, {"x": x})[0], _run(model, {"x": x})[0], rtol=1e-5, atol=1e-6)


def test_calib_arrays_give_the_sequence_length():
    model = token_net()
    ids = np.random.default_rng(0).integers(0, 100, (40, 12)).astype(np.int64)
    import pathlib
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "tokens.npz"
        np.savez(path, ids=ids)
        calib = load_calibration(path, model)
        result = onnxslim.optimize(model, quantize=QuantizeConfig(mode="int8"), calibration=calib, **FAST)
    assert result.report["validation"]["input_shapes"] == {"ids": {"shape": [1, 12], "source": "--calib"}}


def test_input_shape_wins_and_is_reported():
    result = onnxslim.optimize(conv_net(), prune=PruneConfig(ratio=0.3), input_shapes={"x": (1, 3, 40, 40)}, **FAST)
    assert result.report["validation"]["input_shapes"] == {"x": {"shape": [1, 3, 40, 40], "source": "--input-shape"}}
    # MACs at that shape: conv1 20x20, conv2 20x20, conv3 10x10, fc
    want = 400 * 16 * 27 + 400 * 24 * 16 * 9 + 100 * 32 * 24 * 9 + 320
    assert result.report["validation"]["macs"]["before"] == want


def unrunnable_net() -> onnx.ModelProto:
    """x [batch, n] reshaped to a fixed [1, 7, 13]: only n = 91 runs, a size no candidate list holds."""
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"], name="reshape"),
             helper.make_node("MatMul", ["r", "w"], ["y"], name="mm")]
    inits = [numpy_helper.from_array(np.array([1, 7, 13], np.int64), "shape"), _init(rng, "w", (13, 6))]
    g = helper.make_graph(nodes, "u", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "n"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 7, 6])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize("name", ["bare", "prune l1", "lowrank energy", "int8-dynamic"])
def test_no_runnable_shape_still_optimizes_and_skips_validation(name):
    model = unrunnable_net()
    result = onnxslim.optimize(model, **PASSES[name], **FAST)
    val = result.report["validation"]
    assert "no input shape the model runs with" in val["skipped"] and val["input_shapes"] == {}
    x = np.random.default_rng(0).standard_normal((1, 91)).astype(np.float32)
    got, want = _run(result.model, {"x": x})[0], _run(model, {"x": x})[0]
    assert got.shape == want.shape == (1, 7, 6)
    if name == "bare":
        np.testing.assert_allclose(got, want, rtol=1e-6)
    if name == "int8-dynamic":
        assert any(n.op_type in ("MatMulInteger", "DynamicQuantizeLinear") for n in result.model.graph.node)
        assert "skipped" in result.report["passes"]["quantize"]["fidelity"]


def test_no_runnable_shape_fails_only_when_min_cosine_asks():
    with pytest.raises(SlimError, match="skipped") as err:
        onnxslim.optimize(unrunnable_net(), min_cosine=0.9, **FAST)
    assert err.value.exit_code == FIDELITY_FAILED


def test_choose_prefers_stride_multiples_and_unifies_named_dims():
    model = conv_net()
    run = runshapes.choose(model)
    assert run.shapes == {"x": (1, 3, 224, 224)} and run.sources == {"x": "auto"} and run.tried == 1
    assert runshapes._total_stride(model) == 4
    # no probing allowed: a dynamic dim stays unresolved, with the reason
    off = runshapes.choose(model, probe=False)
    assert off.shapes is None and "h" in off.reason
    # a dim named like input 0's batch takes batch 1 on the other inputs too
    two = token_net()
    two.graph.input.append(helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", 4]))
    chosen = runshapes.choose(two, probe=False, hints={"ids": ("--calib", (1, 9))})
    assert chosen.shapes == {"ids": (1, 9), "mask": (1, 4)} and chosen.sources["ids"] == "--calib"


def test_symbolic_macs_are_unknown_not_an_error():
    cost = model_cost(conv_net())
    assert set(cost["unknown_macs_nodes"]) >= {"conv1", "conv2", "conv3"} and cost["params"] > 0


def test_image_folder_takes_the_run_size_of_a_dynamic_model(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    ds = load_calibration(tmp_path, conv_net())
    assert ds.shape_hints() == {}  # no crop given: the size is the one the model is found to run with
    ds.bind({"x": (1, 3, 64, 64)})
    assert next(iter(ds.batches(2)))["x"].shape == (2, 3, 64, 64)
    from onnxslim.calibration import Preprocess
    cropped = load_calibration(tmp_path, conv_net(), preprocess=Preprocess(crop=32))
    assert cropped.shape_hints() == {"x": ("preprocess", (1, 3, 32, 32))}


def test_random_calibration_batches_every_dim_named_batch():
    # silero VAD: input [batch, sequence], state [2, batch, 128]: the batch is axis 1 of the state
    model = token_net()
    model.graph.input.append(helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 8]))
    model.graph.input.append(helper.make_tensor_value_info("sr", TensorProto.INT64, []))
    ds = load_calibration(None, model, size=5)
    ds.bind({"ids": (1, 12), "state": (2, 1, 8), "sr": ()})
    shapes = [{k: v.shape for k, v in feed.items()} for feed in ds.batches(4)]
    assert shapes == [{"ids": (4, 12), "state": (2, 4, 8), "sr": ()}, {"ids": (1, 12), "state": (2, 1, 8), "sr": ()}]
    assert int(next(iter(ds.batches(4)))["sr"]) == 16000  # a sample rate, not a token id


def test_empty_outputs_compare_as_equal():
    # a detector with random weights finds nothing: boxes [0, 4] on both sides
    from onnxslim.metrics import plan_fidelity as fidelity_summary
    from onnxslim.metrics import compare_outputs
    empty = [{"boxes": np.zeros((0, 4), np.float32), "n": np.float32(0)}]
    out = compare_outputs(empty, empty)
    assert out["boxes"]["max_abs_error"] == 0.0
    assert set(fidelity_summary(empty, empty)) >= {"boxes", "n"}
