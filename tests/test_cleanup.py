"""passes/cleanup.py: every rewrite keeps the outputs (rtol 1e-5) and leaves the normalized form later passes
assume: BN folded into Conv/ConvTranspose (or kept on request), no Identity/Dropout, constant and
Shape-derived subgraphs folded, static Reshape shapes, unique non-empty node names."""
import json
import os
import signal
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxslim.graph import load_model
from onnxslim.passes.cleanup import CleanupConfig, run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(REPO, "models")
RNG = np.random.default_rng(0)


def _f32(*shape, positive=False):
    a = RNG.standard_normal(shape).astype(np.float32)
    return np.abs(a) + 0.5 if positive else a


def _model(nodes, inputs, outputs, inits=None, opset=17):
    """inputs/outputs: (name, shape) float tensors (shape None for unknown); inits: {name: array}."""
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def _run(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))


def _feeds(model, batch=2):
    feeds = {}
    inits = {t.name for t in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else batch for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = RNG.standard_normal(dims).astype(np.float32)
    return feeds


def _assert_same_outputs(before, after, rtol=1e-5, atol=1e-5, batches=(2,)):
    assert [o.name for o in after.graph.output] == [o.name for o in before.graph.output]
    assert [i.name for i in after.graph.input] == [i.name for i in before.graph.input]
    for batch in batches:
        feeds = _feeds(before, batch)
        want, got = _run(before, feeds), _run(after, feeds)
        assert want.keys() == got.keys()
        for name in want:
            assert got[name].shape == want[name].shape
            np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=atol, err_msg=name)


def _ops(model):
    return Counter(n.op_type for n in model.graph.node)


def _const_value(model, name):
    """Value of a tensor that must be a constant after cleanup (initializer or Constant node)."""
    for t in model.graph.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return numpy_helper.to_array(n.attribute[0].t)
    raise AssertionError(f"{name} is not a constant")


def _cleanup(model, fold_bn=True):
    result = run(model, CleanupConfig(fold_bn=fold_bn))
    onnx.checker.check_model(result.model)
    return result.model, result.report


# -- BatchNormalization folding --------------------------------------------------------------------------

def _bn_inits(c, prefix="bn"):
    return {f"{prefix}_g": _f32(c), f"{prefix}_b": _f32(c), f"{prefix}_m": _f32(c), f"{prefix}_v": _f32(c, positive=True)}


def _bn(x, y, prefix="bn", **attrs):
    return helper.make_node("BatchNormalization", [x, f"{prefix}_g", f"{prefix}_b", f"{prefix}_m", f"{prefix}_v"], [y],
                            name=prefix, **attrs)


@pytest.mark.parametrize("bias,group", [(True, 1), (False, 1), (True, 3)])
def test_conv_bn_folds_with_equal_outputs(bias, group):
    inits = {"w": _f32(6, 3 // group, 3, 3), **_bn_inits(6)}
    conv_in = ["x", "w"]
    if bias:
        inits["cb"] = _f32(6)
        conv_in.append("cb")
    nodes = [helper.make_node("Conv", conv_in, ["c"], name="conv", pads=[1, 1, 1, 1], group=group),
             _bn("c", "n", epsilon=1e-3),
             helper.make_node("Relu", ["n"], ["y"], name="relu")]
    model = _model(nodes, [("x", ["N", 3, 8, 8])], [("y", ["N", 6, 8, 8])], inits)
    out, report = _cleanup(model)
    assert _ops(out) == {"Conv": 1, "Relu": 1}
    assert report["batchnorm_folded"] == 1
    conv = next(n for n in out.graph.node if n.op_type == "Conv")
    assert len(conv.input) == 3  # a bias was created if there was none
    _assert_same_outputs(model, out, batches=(1, 3))


def test_conv1d_and_conv3d_bn_fold():
    for x_shape, w_shape in (((2, 3, 10), (5, 3, 3)), ((1, 3, 4, 5, 6), (5, 3, 2, 2, 2))):
        inits = {"w": _f32(*w_shape), **_bn_inits(5)}
        nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), _bn("c", "y")]
        model = _model(nodes, [("x", list(x_shape))], [("y", None)], inits)
        out, report = _cleanup(model)
        assert report["batchnorm_folded"] == 1
        _assert_same_outputs(model, out)


def test_fold_bn_false_keeps_bn():
    inits = {"w": _f32(4, 3, 3, 3), **_bn_inits(4)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), _bn("c", "y")]
    model = _model(nodes, [("x", [1, 3, 6, 6])], [("y", None)], inits)
    out, report = _cleanup(model, fold_bn=False)
    assert _ops(out) == {"Conv": 1, "BatchNormalization": 1}
    assert report["batchnorm_folded"] == 0
    _assert_same_outputs(model, out)


def test_bn_not_folded_when_conv_output_is_also_used_elsewhere():
    inits = {"w": _f32(4, 3, 1, 1), **_bn_inits(4)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), _bn("c", "n"),
             helper.make_node("Add", ["n", "c"], ["y"], name="add")]
    model = _model(nodes, [("x", [1, 3, 5, 5])], [("y", None)], inits)
    out, _ = _cleanup(model)
    assert _ops(out)["BatchNormalization"] == 1
    _assert_same_outputs(model, out)


def test_bn_in_training_mode_is_not_folded():
    """training_mode=1 normalizes by the batch's statistics: folding the running ones changed the outputs."""
    inits = {"w": _f32(4, 3, 3, 3), **_bn_inits(4)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("BatchNormalization", ["c", "bn_g", "bn_b", "bn_m", "bn_v"], ["y", "rm", "rv"], name="bn",
                              training_mode=1)]
    model = _model(nodes, [("x", [2, 3, 6, 6])], [("y", [2, 4, 4, 4])], inits, opset=15)
    out, report = _cleanup(model)
    assert report["batchnorm_folded"] == 0
    _assert_same_outputs(model, out)


def test_bn_whose_running_stats_are_graph_outputs_is_kept():
    inits = {"w": _f32(4, 3, 3, 3), **_bn_inits(4)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("BatchNormalization", ["c", "bn_g", "bn_b", "bn_m", "bn_v"], ["y", "rm", "rv"], name="bn",
                              training_mode=1)]
    model = _model(nodes, [("x", [2, 3, 6, 6])], [("y", [2, 4, 4, 4]), ("rm", [4]), ("rv", [4])], inits, opset=15)
    out, _ = _cleanup(model)
    assert [o.name for o in out.graph.output] == ["y", "rm", "rv"]
    _assert_same_outputs(model, out)


def test_bn_after_non_conv_is_kept():
    inits = _bn_inits(3)
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), _bn("r", "y")]
    model = _model(nodes, [("x", [2, 3, 4, 4])], [("y", None)], inits)
    out, _ = _cleanup(model)
    assert _ops(out)["BatchNormalization"] == 1
    _assert_same_outputs(model, out)


@pytest.mark.parametrize("group", [1, 2])
def test_convtranspose_bn(group):
    cin, cout = 4, 6
    inits = {"w": _f32(cin, cout // group, 2, 2), "cb": _f32(cout), **_bn_inits(cout)}
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "cb"], ["c"], name="up", strides=[2, 2], group=group),
             _bn("c", "y")]
    model = _model(nodes, [("x", ["N", cin, 4, 4])], [("y", None)], inits)
    out, report = _cleanup(model)
    if group == 1:
        assert "BatchNormalization" not in _ops(out) and report["batchnorm_folded"] == 1
    _assert_same_outputs(model, out)


def test_bn_params_from_identity_of_initializer_still_fold():
    """The digits export shares one BN bias through an Identity of an initializer."""
    inits = {"w": _f32(4, 3, 3, 3), **_bn_inits(4)}
    nodes = [helper.make_node("Identity", ["bn_b"], ["bn_b2"], name="dedup"),
             helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
             helper.make_node("BatchNormalization", ["c", "bn_g", "bn_b2", "bn_m", "bn_v"], ["y"], name="bn")]
    model = _model(nodes, [("x", [1, 3, 6, 6])], [("y", None)], inits)
    out, _ = _cleanup(model)
    assert _ops(out) == {"Conv": 1}
    _assert_same_outputs(model, out)


# -- Identity / Dropout ------------------------------------------------------------------------------

def test_identity_and_dropout_removed():
    inits = {"w": _f32(4, 3, 1, 1)}
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Identity", ["r"], ["i"], name="id"),
             helper.make_node("Dropout", ["i"], ["d"], name="drop"),
             helper.make_node("Dropout", ["d"], ["d2", "mask"], name="drop_with_unused_mask"),
             helper.make_node("Conv", ["d2", "w"], ["y"], name="conv")]
    model = _model(nodes, [("x", [1, 3, 4, 4])], [("y", None)], inits)
    out, report = _cleanup(model)
    assert _ops(out) == {"Relu": 1, "Conv": 1}
    assert report["identity_removed"] == 3
    _assert_same_outputs(model, out)


def test_identity_feeding_a_graph_output():
    """The producer writes the graph output itself; the output keeps its name."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Sigmoid", ["r"], ["s"], name="sig"),
             helper.make_node("Identity", ["r"], ["out"], name="id")]
    model = _model(nodes, [("x", [2, 5])], [("out", [2, 5]), ("s", [2, 5])])
    out, _ = _cleanup(model)
    assert _ops(out) == {"Relu": 1, "Sigmoid": 1}
    relu = next(n for n in out.graph.node if n.op_type == "Relu")
    assert relu.output[0] == "out"
    _assert_same_outputs(model, out)


def test_identity_between_graph_input_and_output_is_kept():
    nodes = [helper.make_node("Identity", ["x"], ["y"], name="id"),
             helper.make_node("Relu", ["x"], ["z"], name="relu")]
    model = _model(nodes, [("x", [2, 3])], [("y", [2, 3]), ("z", [2, 3])])
    out, _ = _cleanup(model)
    _assert_same_outputs(model, out)


def test_identity_of_one_output_into_another_output():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Identity", ["a"], ["b"], name="id")]
    model = _model(nodes, [("x", [2, 3])], [("a", [2, 3]), ("b", [2, 3])])
    out, _ = _cleanup(model)
    _assert_same_outputs(model, out)


def test_dropout_whose_mask_is_used_is_kept():
    nodes = [helper.make_node("Dropout", ["x"], ["d", "mask"], name="drop"),
             helper.make_node("Cast", ["mask"], ["m"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Add", ["d", "m"], ["y"], name="add")]
    model = _model(nodes, [("x", [2, 3])], [("y", None)])
    out, _ = _cleanup(model)
    _assert_same_outputs(model, out)


# -- constant folding --------------------------------------------------------------------------------

def test_constant_subgraph_folded():
    scale = helper.make_tensor("v", TensorProto.FLOAT, [4], [1, 2, 3, 4])
    nodes = [helper.make_node("Constant", [], ["c"], name="const", value=scale),
             helper.make_node("Mul", ["c", "two"], ["c2"], name="mul_const"),
             helper.make_node("Sqrt", ["c2"], ["c3"], name="sqrt_const"),
             helper.make_node("Shape", ["x"], ["s"], name="shape"),  # static shape: foldable
             helper.make_node("Cast", ["s"], ["sf"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["sf"], ["n"], name="sum", keepdims=1),
             helper.make_node("Mul", ["x", "c3"], ["xs"], name="mul"),
             helper.make_node("Add", ["xs", "n"], ["y"], name="add")]
    model = _model(nodes, [("x", [3, 4])], [("y", None)], {"two": np.array(2, np.float32)})
    out, _ = _cleanup(model)
    assert _ops(out) == {"Mul": 1, "Add": 1}
    mul = next(n for n in out.graph.node if n.op_type == "Mul")
    np.testing.assert_allclose(_const_value(out, mul.input[1]), np.sqrt([2, 4, 6, 8]), rtol=1e-6)
    _assert_same_outputs(model, out, batches=(3,))


def _i64(name, values):
    return helper.make_node("Constant", [], [name], name=f"k_{name}",
                            value=numpy_helper.from_array(np.array(values, np.int64), name))


def _same_pad_nodes(x="x", k=3, s=2):
    """TF "same" padding computed at run time, as torch exports it (the shared EfficientNet-Lite0 shape):
    total = max((ceil(hw/s) - 1)*s + k - hw, 0) from Shape; F.pad list [wl, wr, ht, hb] ->
    ConstantOfShape zeros -> Concat -> Reshape[-1,2] -> Slice reversed -> Transpose -> Reshape[-1] -> Cast -> Pad."""
    return [
        helper.make_node("Shape", [x], ["shp"], name="shape"),
        _i64("s2", [2]), _i64("s4", [4]), _i64("one", [1]), _i64("stride", [s]), _i64("kern", [k]), _i64("zero", [0]),
        _i64("two", [2]), _i64("i0", [0]), _i64("i1", [1]), _i64("i2", [2]), _i64("len4", [4]),
        _i64("rs", [-1, 2]), _i64("flat", [-1]), _i64("rev_s", [-1]), _i64("rev_e", [-(2**63) + 1]),
        _i64("ax0", [0]), _i64("step", [-1]),
        helper.make_node("Slice", ["shp", "s2", "s4"], ["hw"], name="hw"),
        helper.make_node("Add", ["hw", "stride"], ["hw_s"], name="ceil_a"),
        helper.make_node("Sub", ["hw_s", "one"], ["hw_s1"], name="ceil_b"),
        helper.make_node("Div", ["hw_s1", "stride"], ["outs"], name="ceil_c"),
        helper.make_node("Sub", ["outs", "one"], ["o1"], name="t_a"),
        helper.make_node("Mul", ["o1", "stride"], ["o2"], name="t_b"),
        helper.make_node("Add", ["o2", "kern"], ["o3"], name="t_c"),
        helper.make_node("Sub", ["o3", "hw"], ["o4"], name="t_d"),
        helper.make_node("Max", ["o4", "zero"], ["total"], name="t_e"),
        helper.make_node("Div", ["total", "two"], ["lo"], name="lo"),
        helper.make_node("Sub", ["total", "lo"], ["hi"], name="hi"),
        helper.make_node("Slice", ["lo", "i1", "i2"], ["wl"], name="wl"),
        helper.make_node("Slice", ["hi", "i1", "i2"], ["wr"], name="wr"),
        helper.make_node("Slice", ["lo", "i0", "i1"], ["ht"], name="ht"),
        helper.make_node("Slice", ["hi", "i0", "i1"], ["hb"], name="hb"),
        helper.make_node("Concat", ["wl", "wr", "ht", "hb"], ["plist"], name="plist", axis=0),
        helper.make_node("ConstantOfShape", ["len4"], ["zeros"], name="zeros",
                         value=numpy_helper.from_array(np.array([0], np.int64), "z")),
        helper.make_node("Concat", ["plist", "zeros"], ["p8"], name="p8", axis=0),
        helper.make_node("Reshape", ["p8", "rs"], ["p42"], name="p42"),
        helper.make_node("Slice", ["p42", "rev_s", "rev_e", "ax0", "step"], ["prev"], name="prev"),
        helper.make_node("Transpose", ["prev"], ["pt"], name="pt", perm=[1, 0]),
        helper.make_node("Reshape", ["pt", "flat"], ["pflat"], name="pflat"),
        helper.make_node("Cast", ["pflat"], ["pads"], name="pcast", to=TensorProto.INT64),
        helper.make_node("Pad", [x, "pads"], ["xp"], name="pad"),
    ]


@pytest.mark.parametrize("opset", [13, 17])  # Max on int64 needs opset >= 12; below 15 onnx does not propagate shape values
def test_same_padding_subgraph_folds_to_constant_pads(opset):
    nodes = _same_pad_nodes() + [helper.make_node("Conv", ["xp", "w"], ["y"], name="conv", strides=[2, 2])]
    model = _model(nodes, [("x", ["N", 3, 7, 7])], [("y", ["N", 4, 4, 4])], {"w": _f32(4, 3, 3, 3)}, opset=opset)
    out, _ = _cleanup(model)
    # the folded zero Pad then joins the Conv (rule pad_conv)
    assert _ops(out) == {"Conv": 1}, _ops(out)
    conv = next(n for n in out.graph.node if n.op_type == "Conv")
    # (ceil(7/2)-1)*2 + 3 - 7 = 2 -> 1 before, 1 after on H and W; Conv order [begins..., ends...]
    assert list(next(a for a in conv.attribute if a.name == "pads").ints) == [1, 1, 1, 1]
    _assert_same_outputs(model, out, batches=(1, 3))


def test_same_padding_asymmetric():
    """8x8, k3 s2: total 1 -> 0 before, 1 after (the case that needs run-time pads in TF)."""
    nodes = _same_pad_nodes() + [helper.make_node("Conv", ["xp", "w"], ["y"], name="conv", strides=[2, 2])]
    model = _model(nodes, [("x", ["N", 3, 8, 8])], [("y", None)], {"w": _f32(4, 3, 3, 3)})
    out, _ = _cleanup(model)
    conv = next(n for n in out.graph.node if n.op_type == "Conv")  # the zero Pad joined the Conv (pad_conv)
    assert list(next(a for a in conv.attribute if a.name == "pads").ints) == [0, 0, 1, 1]
    assert "Shape" not in _ops(out) and "Pad" not in _ops(out)
    _assert_same_outputs(model, out)


@pytest.mark.parametrize("opset", [11, 17])
def test_shape_derived_reshape_with_dynamic_batch_becomes_static(opset):
    """Flatten as torch exports `x.view(x.size(0), -1)`: Shape -> Gather(0) -> Unsqueeze -> Concat([-1])."""
    unsqueeze = (helper.make_node("Unsqueeze", ["b", "ax"], ["b1"], name="unsq") if opset >= 13 else
                 helper.make_node("Unsqueeze", ["b"], ["b1"], name="unsq", axes=[0]))
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Shape", ["r"], ["s"], name="shape"),
             _i64("idx0", 0), _i64("ax", [0]), _i64("minus1", [-1]),
             helper.make_node("Gather", ["s", "idx0"], ["b"], name="gather", axis=0),
             unsqueeze,
             helper.make_node("Concat", ["b1", "minus1"], ["shape2"], name="cat", axis=0),
             helper.make_node("Reshape", ["r", "shape2"], ["flat"], name="reshape"),
             helper.make_node("Gemm", ["flat", "w", "bias"], ["y"], name="fc", transB=1)]
    model = _model(nodes, [("x", ["batch", 4, 3, 3])], [("y", ["batch", 5])], {"w": _f32(5, 36), "bias": _f32(5)},
                   opset=opset)
    out, report = _cleanup(model)
    assert _ops(out) == {"Relu": 1, "Reshape": 1, "Gemm": 1}, _ops(out)
    reshape = next(n for n in out.graph.node if n.op_type == "Reshape")
    shape = _const_value(out, reshape.input[1])
    assert shape[0] == 0 and list(shape[1:]) in ([36], [-1])  # 0 = copy the (dynamic) batch
    assert report["reshape_shapes_made_static"] >= 1 or "Shape" not in _ops(out)
    # the graph input keeps its dynamic batch
    assert out.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    _assert_same_outputs(model, out, batches=(1, 2, 5))


def test_reshape_of_two_dynamic_dims_is_left_alone_and_correct():
    """[B, T, 8] -> [B*T, 8] from the shape: the first dim moves with both inputs dims; it may stay dynamic,
    but the result must stay right for every B, T."""
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             _i64("i0", [0]), _i64("i2", [2]), _i64("eight", [8]),
             helper.make_node("Slice", ["s", "i0", "i2"], ["bt"], name="bt"),
             helper.make_node("ReduceProd", ["bt"], ["n"], name="prod", keepdims=1),
             helper.make_node("Concat", ["n", "eight"], ["shape2"], name="cat", axis=0),
             helper.make_node("Reshape", ["x", "shape2"], ["y"], name="reshape")]
    model = _model(nodes, [("x", ["B", "T", 8])], [("y", None)])
    out, _ = _cleanup(model)
    for b, t in ((1, 1), (2, 3), (4, 5)):
        feeds = {"x": RNG.standard_normal((b, t, 8)).astype(np.float32)}
        np.testing.assert_array_equal(_run(out, feeds)["y"], feeds["x"].reshape(b * t, 8))


class _Hung(BaseException):
    """Not an Exception: folding code that swallows errors cannot swallow the timeout."""


@pytest.fixture
def deadline():
    def hung(*_):
        raise _Hung("cleanup took more than 20 s")
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def test_constant_subgraph_onnxruntime_cannot_run_does_not_hang(deadline):
    """A custom-domain op on constants: onnxruntime cannot fold it. gs's "basic" partitioning retried the
    same failing subgraph until the recursion limit, creating a session each time (minutes per model)."""
    nodes = [helper.make_node("Relu", ["c"], ["c1"], name="foldable"),
             helper.make_node("MyOp", ["c1"], ["k"], name="custom", domain="custom.ops"),
             helper.make_node("Add", ["x", "k"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
                              [numpy_helper.from_array(np.array([-1, 0, 2], np.float32), "c")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom.ops", 1)],
                              ir_version=9)
    out = run(model).model
    assert [n.op_type for n in out.graph.node] == ["MyOp", "Add"]
    np.testing.assert_array_equal(_const_value(out, out.graph.node[0].input[0]), [0, 0, 2])  # Relu folded


def test_reshape_swapping_two_of_four_dynamic_dims_stays_right():
    """x [A, B, C, E] reshaped to [E, B, C, A] from its Shape. The shape probes gave the 4th dynamic dim the
    same size as the 1st, so E looked like a copy of A and the shape was frozen to [0, 0, 0, 0] (identity)."""
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"), _i64("perm", [3, 1, 2, 0]),
             helper.make_node("Gather", ["s", "perm"], ["s2"], name="gather", axis=0),
             helper.make_node("Reshape", ["x", "s2"], ["y"], name="reshape")]
    model = _model(nodes, [("x", ["A", "B", "C", "E"])], [("y", None)])
    out, _ = _cleanup(model)
    x = _f32(2, 3, 4, 5)
    np.testing.assert_array_equal(_run(out, {"x": x})["y"], x.reshape(5, 3, 4, 2))


@pytest.mark.parametrize("hw", [(64, 96), (96, 64), (32, 32), (200, 40)])
def test_reshape_of_downsampled_dynamic_hw_stays_right(hw):
    """[N, 8, H/32, W/32] -> [N, 2, 4, H/32, W/32] from its Shape. With small probe sizes ceil(H/32) was 1 in
    both probes (frozen as static 1), or equal to ceil(W/32) so H looked like a copy of W."""
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], name="pool", kernel_shape=[32, 32], strides=[32, 32], ceil_mode=1),
             helper.make_node("Shape", ["p"], ["s"], name="shape"), _i64("i0", [0]), _i64("i23", [2, 3]), _i64("two4", [2, 4]),
             helper.make_node("Gather", ["s", "i0"], ["n"], name="gn", axis=0),
             helper.make_node("Gather", ["s", "i23"], ["hw"], name="ghw", axis=0),
             helper.make_node("Concat", ["n", "two4", "hw"], ["s2"], name="cat", axis=0),
             helper.make_node("Reshape", ["p", "s2"], ["y"], name="reshape")]
    model = _model(nodes, [("x", ["N", 8, "H", "W"])], [("y", None)])
    out, _ = _cleanup(model)
    x = {"x": _f32(2, 8, *hw)}
    want = _run(model, x)["y"]
    assert want.shape == (2, 2, 4, -(-hw[0] // 32), -(-hw[1] // 32))
    np.testing.assert_array_equal(_run(out, x)["y"], want)


# -- node names ---------------------------------------------------------------------------------------

def test_node_names_unique_and_non_empty():
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Sigmoid", ["a"], ["b"], name="dup"),
             helper.make_node("Tanh", ["b"], ["c"], name="dup"),
             helper.make_node("Relu", ["c"], ["d"], name=""),
             helper.make_node("Neg", ["d"], ["e"], name="Relu_0"),
             helper.make_node("Abs", ["e"], ["y"])]
    model = _model(nodes, [("x", [2, 3])], [("y", None)])  # onnxruntime refuses it: two nodes named "dup"
    out, _ = _cleanup(model)
    names = [n.name for n in out.graph.node]
    assert len(names) == 6 and all(names) and len(set(names)) == len(names)
    by_op = {n.op_type: n.name for n in out.graph.node if n.op_type not in ("Relu",)}
    # names the model gave keep pointing at the same node (--exclude uses them)
    assert by_op["Sigmoid"] == "dup" and by_op["Neg"] == "Relu_0"
    x = _f32(2, 3)
    expected = np.abs(-np.maximum(np.tanh(1 / (1 + np.exp(-np.maximum(x, 0)))), 0))
    np.testing.assert_allclose(_run(out, {"x": x})["y"], expected, rtol=1e-6)


def test_cleanup_is_idempotent_and_reports_json():
    model = load_model(os.path.join(MODELS, "digits_resnet.onnx"))
    once, report = _cleanup(model)
    twice, report2 = _cleanup(once)
    assert _ops(once) == _ops(twice)
    assert [n.name for n in once.graph.node] == [n.name for n in twice.graph.node]
    assert report2["batchnorm_folded"] == 0 and report2["identity_removed"] == 0
    assert json.loads(json.dumps(report))["nodes_before"] == len(model.graph.node)


# -- committed models ------------------------------------------------------------------------------------

def _eval_inputs(n=64):
    return np.load(os.path.join(MODELS, "digits_eval.npz"))["input"][:n]


def test_digits_bn_folding_matches_the_exporters_folding():
    kept = load_model(os.path.join(MODELS, "digits_resnet.onnx"))
    folded_ref = load_model(os.path.join(MODELS, "digits_resnet_folded.onnx"))
    assert _ops(kept)["BatchNormalization"] == 8
    out, report = _cleanup(kept)
    assert "BatchNormalization" not in _ops(out) and report["batchnorm_folded"] == 8
    assert _ops(out) == _ops(folded_ref)
    x = {"input": _eval_inputs()}
    np.testing.assert_allclose(_run(out, x)["logits"], _run(folded_ref, x)["logits"], rtol=1e-4, atol=1e-4)
    names = [n.name for n in out.graph.node]
    assert all(names) and len(set(names)) == len(names)


def test_digits_bn_kept_when_asked():
    kept = load_model(os.path.join(MODELS, "digits_resnet.onnx"))
    out, _ = _cleanup(kept, fold_bn=False)
    assert _ops(out)["BatchNormalization"] == 8 and "Identity" not in _ops(out)
    x = {"input": _eval_inputs()}
    np.testing.assert_allclose(_run(out, x)["logits"], _run(kept, x)["logits"], rtol=1e-5, atol=1e-5)


def test_resnet_basic_bn_folds_to_resnet_basic():
    bn = load_model(os.path.join(MODELS, "families", "resnet_basic_bn.onnx"))
    ref = load_model(os.path.join(MODELS, "families", "resnet_basic.onnx"))
    out, _ = _cleanup(bn)
    assert "BatchNormalization" not in _ops(out)
    x = {"input": RNG.standard_normal((2, 3, 32, 32)).astype(np.float32)}
    np.testing.assert_allclose(_run(out, x)["logits"], _run(ref, x)["logits"], rtol=1e-4, atol=1e-4)


def test_shufflenet_ends_with_no_shape_nodes():
    model = load_model(os.path.join(MODELS, "families", "shufflenetv2.onnx"))
    out, _ = _cleanup(model)
    ops = _ops(out)
    assert "Shape" not in ops and "Gather" not in ops and "Unsqueeze" not in ops, ops
    # the channel shuffle and chunk Slices remain, with constant parameters
    for node in out.graph.node:
        if node.op_type in ("Reshape", "Slice"):
            for name in node.input[1:]:
                if name:
                    _const_value(out, name)
    _assert_same_outputs(model, out, rtol=1e-4, atol=1e-5, batches=(1, 3))


FAMILIES = sorted(f[:-5] for f in os.listdir(os.path.join(MODELS, "families")) if f.endswith(".onnx"))


@pytest.mark.parametrize("family", FAMILIES)
def test_cleanup_keeps_every_family_equal(family):
    model = load_model(os.path.join(MODELS, "families", f"{family}.onnx"))
    out, _ = _cleanup(model)
    ops = _ops(out)
    assert not {"Identity", "Dropout", "Shape"} & set(ops), ops
    names = [n.name for n in out.graph.node]
    assert all(names) and len(set(names)) == len(names)
    _assert_same_outputs(model, out, rtol=1e-4, atol=1e-4, batches=(2,))


def test_ir3_model_with_initializers_as_inputs():
    """Before IR 4 every initializer had to be listed as a graph input too (old model-zoo files); the BN-folded
    weights are new initializers, so the result must be IR >= 4 to pass onnx.checker."""
    inits = {"w": _f32(4, 3, 3, 3), **_bn_inits(4)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"), _bn("c", "y")]
    model = _model(nodes, [("x", [1, 3, 5, 5])] + [(k, list(v.shape)) for k, v in inits.items()], [("y", [1, 4, 3, 3])], inits,
                   opset=9)
    model.ir_version = 3
    onnx.checker.check_model(model)
    out, _ = _cleanup(model)  # runs onnx.checker
    assert _ops(out) == {"Conv": 1}
    assert [i.name for i in out.graph.input] == ["x"]
    x = {"x": _f32(1, 3, 5, 5)}
    np.testing.assert_allclose(_run(out, x)["y"], _run(model, x)["y"], rtol=1e-5, atol=1e-5)
