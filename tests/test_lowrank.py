"""Low-rank splits on hand-built tiny graphs: exactness where the math says exact, budgets met, data-aware wins."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxslim.context import Context
from onnxslim.errors import SlimError
from onnxslim.progress import silent
from onnxslim.passes.lowrank import LowRankConfig, run
from onnxslim.passes.lowrank import factor


class Calib:
    """Stand-in with the calibration.Dataset interface: batches(n), real, len()."""
    real = True

    def __init__(self, arrays):
        self.arrays = arrays

    def __len__(self):
        return len(next(iter(self.arrays.values())))

    def batches(self, batch_size=16):
        for i in range(0, len(self), batch_size):
            yield {k: v[i:i + batch_size] for k, v in self.arrays.items()}


def _model(nodes, inputs, outputs, inits):
    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _outputs(model, feed):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def _ctx(calib=None):
    return Context(calibration=calib, progress=silent)


def matmul_model(w, bias=None, seq=5):
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h" if bias is not None else "y"], name="mm")]
    inits = {"W": w.astype(np.float32)}
    if bias is not None:
        nodes.append(helper.make_node("Add", ["h", "b"], ["y"], name="add"))
        inits["b"] = bias.astype(np.float32)
    return _model(nodes, [_vi("x", ["N", seq, w.shape[0]])], [_vi("y", ["N", seq, w.shape[1]])], inits)


def test_exactly_low_rank_matmul_is_reproduced_at_its_rank():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((48, 3)) @ rng.standard_normal((3, 40))
    model = matmul_model(w, bias=rng.standard_normal(40))
    result = run(model, LowRankConfig(energy=1.0, round_to=1), _ctx())
    layer = result.report["layers"][0]
    assert layer["rank"] == 3 and layer["scheme"] == "matmul"
    assert [n.op_type for n in result.model.graph.node] == ["MatMul", "MatMul", "Add"]
    assert layer["macs_after"] == 5 * 3 * (48 + 40) and layer["macs_before"] == 5 * 48 * 40
    x = rng.standard_normal((4, 5, 48)).astype(np.float32)
    np.testing.assert_allclose(_outputs(result.model, {"x": x})[0], _outputs(model, {"x": x})[0], rtol=1e-4, atol=1e-4)
    onnx.checker.check_model(result.model)
    json.dumps(result.report)


def test_exactly_low_rank_gemm_with_transposed_weight_and_bias():
    rng = np.random.default_rng(1)
    stored = rng.standard_normal((30, 4)) @ rng.standard_normal((4, 32))  # transB=1: [out=30, in=32], rank 4
    node = helper.make_node("Gemm", ["x", "B", "C"], ["y"], name="gemm", transB=1, alpha=0.5, beta=2.0)
    model = _model([node], [_vi("x", ["N", 32])], [_vi("y", ["N", 30])],
                   {"B": stored.astype(np.float32), "C": rng.standard_normal(30).astype(np.float32)})
    result = run(model, LowRankConfig(energy=1.0, round_to=2), _ctx())
    assert result.report["layers"][0]["rank"] == 4
    assert [n.op_type for n in result.model.graph.node] == ["MatMul", "Gemm"]
    x = rng.standard_normal((6, 32)).astype(np.float32)
    np.testing.assert_allclose(_outputs(result.model, {"x": x})[0], _outputs(model, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_full_rank_weight_is_left_as_is_with_a_reason():
    rng = np.random.default_rng(2)
    w = rng.standard_normal((16, 16))
    model = matmul_model(w)
    result = run(model, LowRankConfig(energy=1.0, round_to=1), _ctx())
    layer = result.report["layers"][0]
    assert layer["scheme"] is None and "saves no MACs" in layer["kept_because"]
    x = rng.standard_normal((2, 5, 16)).astype(np.float32)
    np.testing.assert_array_equal(_outputs(result.model, {"x": x})[0], _outputs(model, {"x": x})[0])


def test_full_rank_split_reproduces_the_layer():
    """At full rank the factors multiply back to W (weight SVD and data-aware projection alike)."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((12, 7))
    v, errors = factor.weight_svd_errors(w, None)
    a, b = factor.output_space_factors(w, v[:, :7], v[:, :7].T)
    np.testing.assert_allclose(a @ b, w, atol=1e-10)
    assert errors[7] < 1e-12
    x = rng.standard_normal((200, 12)) * np.linspace(0.1, 3, 12)
    y = x @ w
    stats = factor.OutputStats.same(np.cov(y.T, bias=True), y.mean(0))
    fit = factor.reduced_rank_fit(stats)
    left, right, shift = factor.projection_at(fit, stats, 7)
    np.testing.assert_allclose(w @ left @ right, w, atol=1e-9)
    np.testing.assert_allclose(shift, 0, atol=1e-9)


def conv_model(kernel, bias=None, hw=9, pads=(1, 1, 1, 1), strides=(1, 1)):
    inputs = ["x", "K"] + (["b"] if bias is not None else [])
    inits = {"K": kernel.astype(np.float32)}
    if bias is not None:
        inits["b"] = bias.astype(np.float32)
    node = helper.make_node("Conv", inputs, ["y"], name="conv", pads=list(pads), strides=list(strides))
    return _model([node], [_vi("x", ["N", kernel.shape[1], hw, hw])], [_vi("y", None)], inits)


def test_separable_kernel_is_exact_under_spatial_svd():
    rng = np.random.default_rng(4)
    cout, cin, k = 16, 6, 3
    # rank-2 in the (cin, kh) x (cout, kw) matricization: a sum of two separable filter banks
    kernel = sum(np.einsum("ci,oj->ocij", rng.standard_normal((cin, k)), rng.standard_normal((cout, k))) for _ in range(2))
    model = conv_model(kernel, bias=rng.standard_normal(cout), hw=11, strides=(2, 1))
    result = run(model, LowRankConfig(energy=1.0, round_to=1, conv_svd="spatial"), _ctx())
    layer = result.report["layers"][0]
    assert layer["scheme"] == "spatial" and layer["rank"] == 2
    convs = [n for n in result.model.graph.node if n.op_type == "Conv"]
    shapes = [tuple(t.dims) for t in result.model.graph.initializer if t.name in {c.input[1] for c in convs}]
    assert sorted(shapes) == sorted([(2, cin, 3, 1), (cout, 2, 1, 3)])
    x = rng.standard_normal((2, cin, 11, 11)).astype(np.float32)
    np.testing.assert_allclose(_outputs(result.model, {"x": x})[0], _outputs(model, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_channel_svd_of_low_rank_conv_is_exact():
    rng = np.random.default_rng(5)
    kernel = (rng.standard_normal((24, 3)) @ rng.standard_normal((3, 8 * 9))).reshape(24, 8, 3, 3)
    model = conv_model(kernel, bias=rng.standard_normal(24))
    result = run(model, LowRankConfig(energy=1.0, round_to=1, conv_svd="channel"), _ctx())
    layer = result.report["layers"][0]
    assert layer["scheme"] == "channel" and layer["rank"] == 3
    x = rng.standard_normal((2, 8, 9, 9)).astype(np.float32)
    np.testing.assert_allclose(_outputs(result.model, {"x": x})[0], _outputs(model, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_grouped_conv_is_left_and_reported():
    rng = np.random.default_rng(6)
    node = helper.make_node("Conv", ["x", "K"], ["y"], name="dw", group=4, pads=[1, 1, 1, 1])
    model = _model([node], [_vi("x", ["N", 4, 8, 8])], [_vi("y", None)], {"K": rng.standard_normal((4, 1, 3, 3)).astype(np.float32)})
    result = run(model, LowRankConfig(energy=0.5), _ctx())
    assert result.report["skipped"][0]["name"] == "dw" and "group" in result.report["skipped"][0]["reason"]
    assert [n.op_type for n in result.model.graph.node] == ["Conv"]


def _mlp(rng, widths, seq=4):
    nodes, inits = [], {}
    prev = "x"
    for i in range(len(widths) - 1):
        w = rng.standard_normal((widths[i], widths[i + 1])) / np.sqrt(widths[i])
        w = w * np.linspace(1.0, 0.05, widths[i + 1])  # decaying spectrum so ranks differ by layer
        inits[f"W{i}"], inits[f"b{i}"] = w.astype(np.float32), (0.1 * rng.standard_normal(widths[i + 1])).astype(np.float32)
        nodes += [helper.make_node("MatMul", [prev, f"W{i}"], [f"h{i}"], name=f"mm{i}"),
                  helper.make_node("Add", [f"h{i}", f"b{i}"], [f"a{i}"], name=f"add{i}"),
                  helper.make_node("Relu", [f"a{i}"], [f"r{i}"], name=f"relu{i}")]
        prev = f"r{i}"
    model = _model(nodes, [_vi("x", ["N", seq, widths[0]])], [_vi(prev, ["N", seq, widths[-1]])], inits)
    return model


@pytest.mark.parametrize("data_aware", [False, True])
@pytest.mark.parametrize("target", [0.6, 0.3])
def test_rank_selection_meets_the_macs_target(target, data_aware):
    rng = np.random.default_rng(7)
    model = _mlp(rng, [32, 64, 48, 32])
    calib = Calib({"x": rng.standard_normal((40, 4, 32)).astype(np.float32)})
    result = run(model, LowRankConfig(target_macs=target, round_to=4, data_aware=data_aware), _ctx(calib))
    rep = result.report
    assert rep["fraction"] <= target + 1e-9
    assert rep["macs_after"] == sum(layer["macs_after"] for layer in rep["layers"])
    assert rep["fraction"] > target - 0.15  # the budget is spent, not wasted
    for layer in rep["layers"]:
        if layer["rank"]:
            assert layer["rank"] % 4 == 0 and layer["macs_after"] < layer["macs_before"]
            assert str(layer["rank"]) in {str(r) for r in layer["errors_by_rank"]["matmul"]}
    # the model still runs, with the same interface
    x = rng.standard_normal((3, 4, 32)).astype(np.float32)
    assert _outputs(result.model, {"x": x})[0].shape == (3, 4, 32)


def test_data_aware_beats_weight_svd_on_anisotropic_inputs():
    rng = np.random.default_rng(8)
    d_in, d_out, rank = 32, 32, 6
    w = rng.standard_normal((d_in, d_out))
    scales = np.exp(np.linspace(0, -4, d_in))  # input energy concentrated in a few directions
    basis = np.linalg.qr(rng.standard_normal((d_in, d_in)))[0]
    model = matmul_model(w, bias=rng.standard_normal(d_out))

    def inputs(n, seed):
        r = np.random.default_rng(seed)
        return ((r.standard_normal((n, 5, d_in)) * scales) @ basis.T + 0.5).astype(np.float32)

    calib = Calib({"x": inputs(64, 9)})
    held_out = inputs(32, 10)
    ref = _outputs(model, {"x": held_out})[0]
    errs = {}
    for data_aware in (False, True):
        result = run(model, LowRankConfig(ranks={"mm": rank}, round_to=1, data_aware=data_aware), _ctx(calib))
        assert result.report["layers"][0]["rank"] == rank
        out = _outputs(result.model, {"x": held_out})[0]
        errs[data_aware] = float(np.sum((out - ref) ** 2) / np.sum((ref - ref.mean((0, 1))) ** 2))
    assert errs[True] < 0.5 * errs[False]
    layer = result.report["layers"][0]
    assert layer["error_data_aware"] < 0.5 * layer["error_weight_svd"]


def test_sequential_fit_corrects_upstream_error():
    """Fitting the second layer on the compressed model's inputs does no worse than fitting it on the original's."""
    rng = np.random.default_rng(11)
    model = _mlp(rng, [24, 48, 24], seq=3)
    calib = Calib({"x": rng.standard_normal((64, 3, 24)).astype(np.float32)})
    x = rng.standard_normal((32, 3, 24)).astype(np.float32)
    ref = _outputs(model, {"x": x})[0]
    errs = {}
    for sequential in (False, True):
        cfg = LowRankConfig(ranks={"mm0": 8, "mm1": 8}, round_to=1, data_aware=True, sequential=sequential)
        result = run(model, cfg, _ctx(calib))
        errs[sequential] = float(np.sum((_outputs(result.model, {"x": x})[0] - ref) ** 2))
        assert "error_fitted" in result.report["layers"][1] or not sequential
    assert errs[True] <= errs[False] * 1.02


def test_exclude_and_ops_filter():
    rng = np.random.default_rng(12)
    model = _mlp(rng, [16, 64, 16])
    result = run(model, LowRankConfig(energy=0.5, exclude=("mm0",), round_to=1), _ctx())
    names = [layer["name"] for layer in result.report["layers"]]
    assert names == ["mm1"] and result.report["skipped"] == [{"name": "mm0", "op": "MatMul", "reason": "excluded by the user"}]
    result = run(model, LowRankConfig(energy=0.5, ops=("conv",)), _ctx())
    assert result.report["layers"] == [] and result.model is model


@pytest.mark.parametrize("kwargs,message", [(dict(), "give exactly one of"), (dict(energy=1.5), "energy must be in"),
                                            (dict(target_macs=0.0), "--lowrank-target-macs must be in"),
                                            (dict(energy=0.5, ops=("lstm",)), "unknown kind"),
                                            (dict(energy=0.5, conv_svd="diagonal"), "--conv-svd must be"),
                                            (dict(energy=0.5, round_to=0), "--round-to must be a positive"),
                                            (dict(energy=0.5, target_macs=0.5), "give exactly one of")])
def test_bad_options_are_slim_errors(kwargs, message):
    with pytest.raises(SlimError, match=message):
        LowRankConfig(**kwargs).check()


def test_data_aware_without_calibration_is_a_slim_error():
    model = matmul_model(np.ones((4, 4)))
    with pytest.raises(SlimError, match="data-aware SVD needs calibration data"):
        run(model, LowRankConfig(energy=0.5, data_aware=True), _ctx())


def test_sensitivity_compresses_the_layer_whose_error_matters_less():
    """Two layers with the same spectrum feed one output, one scaled by 0.01: it should get the lower rank."""
    rng = np.random.default_rng(13)
    w = (rng.standard_normal((32, 32)) * np.linspace(1, 0.1, 32)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W0"], ["h0"], name="loud"),
             helper.make_node("MatMul", ["x", "W1"], ["h1"], name="quiet"),
             helper.make_node("Mul", ["h1", "s"], ["q"], name="scale"),
             helper.make_node("Add", ["h0", "q"], ["y"], name="sum")]
    model = _model(nodes, [_vi("x", ["N", 4, 32])], [_vi("y", ["N", 4, 32])],
                   {"W0": w, "W1": w.copy(), "s": np.array(0.01, np.float32)})
    calib = Calib({"x": rng.standard_normal((32, 4, 32)).astype(np.float32)})
    ranks = {}
    for sens in (False, True):
        result = run(model, LowRankConfig(target_macs=0.5, round_to=2, data_aware=True, sequential=False, sensitivity=sens,
                                          allocation="lagrangian"), _ctx(calib))
        ranks[sens] = {layer["name"]: layer["rank"] or 32 for layer in result.report["layers"]}
        assert result.report["fraction"] <= 0.5
    assert ranks[False]["loud"] == ranks[False]["quiet"]
    assert ranks[True]["quiet"] < ranks[True]["loud"]
    rep = result.report["sensitivity"]
    assert rep["quiet"] < 0.01 * rep["loud"]


def test_data_aware_sequential_conv_chain_is_exact_for_exact_low_rank_kernels():
    """Channel split (data-aware, on output statistics) then a spatial split, fitted level by level."""
    rng = np.random.default_rng(14)
    k1 = (rng.standard_normal((16, 2)) @ rng.standard_normal((2, 4 * 9))).reshape(16, 4, 3, 3)
    k2 = np.einsum("ci,oj->ocij", rng.standard_normal((16, 3)), rng.standard_normal((12, 3)))
    nodes = [helper.make_node("Conv", ["x", "K1", "b1"], ["c1"], name="c1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
             helper.make_node("Conv", ["r1", "K2"], ["y"], name="c2", pads=[1, 1, 1, 1])]
    model = _model(nodes, [_vi("x", ["N", 4, 8, 8])], [_vi("y", None)],
                   {"K1": k1.astype(np.float32), "b1": rng.standard_normal(16).astype(np.float32), "K2": k2.astype(np.float32)})
    calib = Calib({"x": rng.standard_normal((8, 4, 8, 8)).astype(np.float32)})
    cfg = LowRankConfig(energy=1.0, round_to=1, conv_svd="auto", data_aware=True, sequential=True)
    result = run(model, cfg, _ctx(calib))
    by_name = {layer["name"]: layer for layer in result.report["layers"]}
    assert (by_name["c1"]["scheme"], by_name["c1"]["rank"]) == ("channel", 2)
    assert (by_name["c2"]["scheme"], by_name["c2"]["rank"]) == ("spatial", 1)
    assert by_name["c1"]["error_fitted"] < 1e-6
    x = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_outputs(result.model, {"x": x})[0], _outputs(model, {"x": x})[0], rtol=1e-3, atol=1e-3)


def _conv_model(kernel, bias, **attrs):
    nodes = [helper.make_node("Conv", ["x", "K", "b"], ["y"], name="conv", **attrs)]
    return _model(nodes, [_vi("x", ["N", kernel.shape[1], 10, 10])], [_vi("y", None)],
                  {"K": kernel.astype(np.float32), "b": bias.astype(np.float32)})


def _anisotropic_images(rng, n, cin):
    """Channels of very different scales, mixed (the same mix every call), so that some input directions
    carry almost nothing."""
    mix = np.random.default_rng(99).standard_normal((cin, cin)) * np.logspace(0, -2.5, cin)[None, :]
    z = rng.standard_normal((n, 10, 10, cin)) @ mix.T
    return (z.transpose(0, 3, 1, 2) + 0.5).astype(np.float32)


def test_data_aware_spatial_svd_beats_weight_only_on_anisotropic_inputs():
    rng = np.random.default_rng(21)
    cin, cout, r = 6, 8, 4
    kernel = rng.standard_normal((cout, cin, 3, 3))
    bias = rng.standard_normal(cout)
    attrs = dict(pads=[1, 0, 2, 1], strides=[2, 1])
    model = _conv_model(kernel, bias, **attrs)
    calib = Calib({"x": _anisotropic_images(rng, 64, cin)})
    held_out = _anisotropic_images(rng, 64, cin)
    want = _outputs(model, {"x": held_out})[0]
    errors, reports = {}, {}
    for data_aware in (False, True):
        cfg = LowRankConfig(ranks={"conv": r}, conv_svd="spatial", data_aware=data_aware, sequential=False)
        result = run(model, cfg, _ctx(calib))
        assert [n.op_type for n in result.model.graph.node] == ["Conv", "Conv"]
        shapes = [tuple(numpy_helper.to_array(t).shape) for t in result.model.graph.initializer if t.name != "K"]
        assert (r, cin, 3, 1) in shapes and (cout, r, 1, 3) in shapes
        got = _outputs(result.model, {"x": held_out})[0]
        assert got.shape == want.shape
        errors[data_aware] = float(np.sum((got - want) ** 2) / np.sum((want - want.mean(axis=(0, 2, 3), keepdims=True)) ** 2))
        reports[data_aware] = result.report["layers"][0]
    assert errors[True] < 0.5 * errors[False], errors
    entry = reports[True]
    assert entry["scheme"] == "spatial" and entry["rank"] == r
    assert entry["error_data_aware"] < 0.5 * entry["error_weight_svd"]
    # the reported (calibration) output error is what the rewritten model does on the calibration data
    x = calib.arrays["x"]
    ref = _outputs(model, {"x": x})[0]
    got = _outputs(run(model, LowRankConfig(ranks={"conv": r}, conv_svd="spatial", data_aware=True, sequential=False),
                       _ctx(calib)).model, {"x": x})[0]
    measured = np.sum((got - ref) ** 2) / np.sum((ref - ref.mean(axis=(0, 2, 3), keepdims=True)) ** 2)
    assert measured == pytest.approx(entry["error_data_aware"], rel=1e-2, abs=1e-6)


def test_data_aware_spatial_error_curve_never_exceeds_weight_only():
    rng = np.random.default_rng(22)
    kernel = rng.standard_normal((5, 4, 3, 3))
    x = _anisotropic_images(rng, 16, 4)
    from onnxslim.passes.lowrank.stats import im2col
    cols = im2col(x.astype(np.float64), (3, 3), {"pads": [1, 1, 1, 1]})
    assert cols.shape == (16 * 10 * 10, 4 * 9)
    cov = np.cov(cols.T, bias=True)
    curve = factor.data_aware_spatial_errors(kernel, factor.PatchStats(cov, cols.mean(0)), round_to=1)
    w = kernel.reshape(5, -1).T
    total = np.sum(w * (cov @ w))
    for rank in range(1, 12):
        v, h, _ = factor.spatial_factors(kernel, rank)
        d = w - np.einsum("rcik,orkj->ocij", v, h).reshape(5, -1).T
        assert curve[rank] <= np.sum(d * (cov @ d)) / total + 1e-9
    assert curve[12] < 1e-9  # full rank min(Cin*kh, Cout*kw) = 12 is exact
    assert np.all(np.diff(curve[1:]) <= 1e-9)


def test_correct_unsplit_refits_a_whole_layer_after_a_split_one():
    """A split layer's error reaches the next layer; with correct_unsplit that layer (left whole, same MACs) is
    refitted towards the original output and the model's output error drops. The first layer has no bias, so its
    split cannot absorb the mean of what it drops; the second one's bias can. (In a purely linear chain with
    centered data the lost principal components are uncorrelated with what is kept: nothing to correct.)"""
    rng = np.random.default_rng(23)
    w0 = rng.standard_normal((16, 16)) * np.linspace(1, 0.2, 16)
    w1 = rng.standard_normal((16, 16))
    nodes = [helper.make_node("MatMul", ["x", "W0"], ["h0"], name="first"),
             helper.make_node("Relu", ["h0"], ["r0"], name="relu"),
             helper.make_node("MatMul", ["r0", "W1"], ["h1"], name="second"),
             helper.make_node("Add", ["h1", "b1"], ["y"], name="add1")]
    model = _model(nodes, [_vi("x", ["N", 4, 16])], [_vi("y", ["N", 4, 16])],
                   {"W0": w0.astype(np.float32),
                    "W1": w1.astype(np.float32), "b1": rng.standard_normal(16).astype(np.float32)})
    mix = rng.standard_normal((16, 16)) * np.logspace(0, -1, 16)
    calib = Calib({"x": (rng.standard_normal((64, 4, 16)) @ mix + 1.0).astype(np.float32)})
    x = (rng.standard_normal((32, 4, 16)) @ mix + 1.0).astype(np.float32)
    want = _outputs(model, {"x": x})[0]
    errs = {}
    for correct in (False, True):
        cfg = LowRankConfig(ranks={"first": 4}, data_aware=True, sequential=True, correct_unsplit=correct, ridge=1e-3)
        result = run(model, cfg, _ctx(calib))
        second = next(l for l in result.report["layers"] if l["name"] == "second")
        assert second["scheme"] is None and second["macs_after"] == second["macs_before"]
        assert second.get("corrected", False) == correct
        assert [n.op_type for n in result.model.graph.node] == ["MatMul", "MatMul", "Relu", "MatMul", "Add"]
        got = _outputs(result.model, {"x": x})[0]
        errs[correct] = float(np.sum((got - want) ** 2) / np.sum(want ** 2))
    assert errs[True] < 0.9 * errs[False], errs


def _attention_model(wq, bq, wk, bk, heads):
    """logits[n, h, t, s] = q_t,h . k_s,h with q = x Wq + bq, k = x Wk + bk split into contiguous heads."""
    d = wq.shape[1] // heads
    nodes = [helper.make_node("MatMul", ["x", "Wq"], ["q0"], name="query"),
             helper.make_node("Add", ["q0", "bq"], ["q1"], name="q_add"),
             helper.make_node("Reshape", ["q1", "shape"], ["q2"], name="q_heads"),
             helper.make_node("Transpose", ["q2"], ["q3"], name="q_t", perm=[0, 2, 1, 3]),
             helper.make_node("MatMul", ["x", "Wk"], ["k0"], name="key"),
             helper.make_node("Add", ["k0", "bk"], ["k1"], name="k_add"),
             helper.make_node("Reshape", ["k1", "shape"], ["k2"], name="k_heads"),
             helper.make_node("Transpose", ["k2"], ["k3"], name="k_t", perm=[0, 2, 3, 1]),
             helper.make_node("MatMul", ["q3", "k3"], ["scores"], name="qk"),
             helper.make_node("Mul", ["scores", "scale"], ["logits"], name="scale_mul")]
    inits = {"Wq": wq.astype(np.float32), "bq": bq.astype(np.float32), "Wk": wk.astype(np.float32),
             "bk": bk.astype(np.float32), "shape": np.array([0, 0, heads, d], np.int64),
             "scale": np.array(d ** -0.5, np.float32)}
    return _model(nodes, [_vi("x", ["N", 6, wq.shape[0]])], [_vi("logits", None)], inits)


def test_attention_metric_fits_q_and_k_for_the_logits():
    rng = np.random.default_rng(24)
    dim, heads = 16, 2
    model = _attention_model(rng.standard_normal((dim, dim)), rng.standard_normal(dim),
                             rng.standard_normal((dim, dim)), rng.standard_normal(dim), heads)
    mix = rng.standard_normal((dim, dim)) * np.logspace(0, -0.5, dim)
    calib = Calib({"x": (rng.standard_normal((64, 6, dim)) @ mix).astype(np.float32)})
    x = (rng.standard_normal((64, 6, dim)) @ mix).astype(np.float32)
    want = _outputs(model, {"x": x})[0]
    centered = want - want.mean(axis=-1, keepdims=True)  # a softmax ignores what is constant over the keys
    errs = {}
    for metric in (False, True):
        cfg = LowRankConfig(ranks={"query": 4, "key": 4}, data_aware=True, sequential=False, attention_metric=metric)
        result = run(model, cfg, _ctx(calib))
        assert bool(result.report.get("attention_metric")) == metric
        got = _outputs(result.model, {"x": x})[0]
        diff = (got - want) - (got - want).mean(axis=-1, keepdims=True)
        errs[metric] = float(np.sum(diff ** 2) / np.sum(centered ** 2))
        layers = {l["name"]: l for l in result.report["layers"]}
        assert layers["query"]["rank"] == layers["key"]["rank"] == 4
        if metric:
            assert set(result.report["attention_metric"]) == {"query", "key"}
            assert "error_attention_metric" in layers["query"]
    assert errs[True] < 0.8 * errs[False], errs


def test_greedy_allocation_meets_budget_cuts_the_quiet_layer_and_measures_the_real_model():
    """Greedy steps on the opened model: same loud/quiet pair as above; the loss it tracked is the loss of the
    model actually written (non-sequential: the same low-rank weights)."""
    rng = np.random.default_rng(13)
    w = (rng.standard_normal((32, 32)) * np.linspace(1, 0.1, 32)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W0"], ["h0"], name="loud"),
             helper.make_node("Add", ["h0", "b0"], ["a0"], name="add0"),
             helper.make_node("MatMul", ["x", "W1"], ["h1"], name="quiet"),
             helper.make_node("Mul", ["h1", "s"], ["q"], name="scale"),
             helper.make_node("Add", ["a0", "q"], ["y"], name="sum")]
    model = _model(nodes, [_vi("x", ["N", 4, 32])], [_vi("y", ["N", 4, 32])],
                   {"W0": w, "W1": w.copy(), "s": np.array(0.01, np.float32), "b0": rng.standard_normal(32).astype(np.float32)})
    calib = Calib({"x": (rng.standard_normal((32, 4, 32)) + 0.5).astype(np.float32)})
    cfg = LowRankConfig(target_macs=0.5, round_to=2, data_aware=True, sequential=False, allocation="greedy",
                        allocation_batches=2, batch_size=8)
    result = run(model, cfg, _ctx(calib))
    rep = result.report
    assert rep["allocation"] == "greedy" and rep["fraction"] <= 0.5
    ranks = {layer["name"]: layer["rank"] or 32 for layer in rep["layers"]}
    assert ranks["quiet"] < ranks["loud"]
    feeds = list(calib.batches(8))[:2]
    errs = []
    for feed in feeds:
        want, got = _outputs(model, feed)[0], _outputs(result.model, feed)[0]
        errs.append(np.sum((got.astype(np.float64) - want) ** 2) / np.sum(want.astype(np.float64) ** 2))
    final = [t for t in rep["allocation_trace"] if t.get("kept", True)][-1]  # a refinement not kept is only tried
    assert final["loss"] == pytest.approx(np.mean(errs), rel=1e-3, abs=1e-6)
    assert final["macs_fraction"] <= 0.5


@pytest.mark.parametrize("conv_svd", ["channel", "spatial"])
def test_greedy_opened_model_matches_the_written_one_for_conv_and_gemm(conv_svd):
    """The opened model's weight layouts (Conv kernel, Gemm with transB/alpha/beta and a bias, split or fed
    whole) reproduce the rewritten model: the loss greedy tracked equals the written model's."""
    rng = np.random.default_rng(25)
    k1 = rng.standard_normal((12, 4, 3, 3)).astype(np.float32)
    wg = rng.standard_normal((10, 12 * 16)).astype(np.float32)  # transB: [out, in]
    nodes = [helper.make_node("Conv", ["x", "K1", "c1"], ["h"], name="conv", pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Flatten", ["r"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "Wg", "bg"], ["y"], name="fc", transB=1, alpha=0.5, beta=2.0)]
    model = _model(nodes, [_vi("x", ["N", 4, 8, 8])], [_vi("y", ["N", 10])],
                   {"K1": k1, "c1": rng.standard_normal(12).astype(np.float32), "Wg": wg,
                    "bg": rng.standard_normal(10).astype(np.float32)})
    calib = Calib({"x": _anisotropic_images(rng, 32, 4)[:, :, :8, :8].copy()})
    cfg = LowRankConfig(target_macs=0.6, round_to=2, data_aware=True, sequential=False, allocation="greedy",
                        allocation_batches=2, batch_size=8, conv_svd=conv_svd)
    result = run(model, cfg, _ctx(calib))
    rep = result.report
    assert rep["allocation"] == "greedy" and rep["fraction"] <= 0.6 and rep["factorized"] >= 1
    assert {l["scheme"] for l in rep["layers"] if l["name"] == "conv"} <= {conv_svd, None}
    errs = []
    for feed in list(calib.batches(8))[:2]:
        want, got = _outputs(model, feed)[0].astype(np.float64), _outputs(result.model, feed)[0].astype(np.float64)
        errs.append(np.sum((got - want) ** 2) / np.sum(want ** 2))
    final = [t for t in rep["allocation_trace"] if t.get("kept", True)][-1]
    assert final["loss"] == pytest.approx(np.mean(errs), rel=1e-3, abs=1e-6)
