"""The low-rank pass's shortcuts (issue 11, run time) give what the long way gives: fits bit for bit, sliced
sensitivity runs the same errors as splitting the model, the cached original outputs the same rows."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxslim.metrics import mean_relative_error
from onnxslim.runtime import TensorTap
from onnxslim.passes.lowrank import factor, sensitivity
from onnxslim.passes.lowrank.layers import find_layers
from onnxslim.passes.lowrank.opened import OpenWeights
from onnxslim.passes.lowrank.rewrite import Editor
from onnxslim.passes.lowrank.stats import OriginalOutputs, _drop_masked, _row_weights, original_stats, up_to
from test_lowrank import Calib


def _vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def _net(rng, widths=(16, 32, 24, 12), seq=4):
    """MatMul+Add+Relu layers, then a Gemm (transB, bias) on the last token; two graph outputs."""
    nodes, inits, prev = [], {}, "x"
    for i in range(len(widths) - 1):
        w = rng.standard_normal((widths[i], widths[i + 1])) / np.sqrt(widths[i]) * np.linspace(1, 0.05, widths[i + 1])
        inits[f"W{i}"], inits[f"b{i}"] = w.astype(np.float32), (0.1 * rng.standard_normal(widths[i + 1])).astype(np.float32)
        nodes += [helper.make_node("MatMul", [prev, f"W{i}"], [f"h{i}"], name=f"mm{i}"),
                  helper.make_node("Add", [f"h{i}", f"b{i}"], [f"a{i}"], name=f"add{i}"),
                  helper.make_node("Relu", [f"a{i}"], [f"r{i}"], name=f"relu{i}")]
        prev = f"r{i}"
    inits["G"] = rng.standard_normal((8, widths[-1])).astype(np.float32)
    inits["c"] = rng.standard_normal(8).astype(np.float32)
    inits["idx"] = np.array(seq - 1, np.int64)
    nodes += [helper.make_node("Gather", [prev, "idx"], ["last"], name="last", axis=1),
              helper.make_node("Gemm", ["last", "G", "c"], ["emb"], name="head", transB=1)]
    graph = helper.make_graph(nodes, "g", [_vi("x", ["N", seq, widths[0]])],
                              [_vi(prev, ["N", seq, widths[-1]]), _vi("emb", ["N", 8])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize("bias", [True, False])
def test_fit_without_earlier_error_is_the_general_formula_bit_for_bit(bias):
    """OutputStats.same skips the products with T_ls = I; a copy of the covariance as cross-covariance takes
    the general path, where the ridge solve gives exactly I."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 48)) * np.linspace(2, 0.1, 48)
    cov = x.T @ x / 500
    mean = x.mean(0) if bias else np.zeros(48)
    for metric in (None, np.diag(np.linspace(1, 2, 48))):
        fast = factor.OutputStats.same(cov, mean)
        slow = factor.OutputStats(cov, cov.copy(), cov, mean, mean)
        fast.metric = slow.metric = metric
        a, b = factor.reduced_rank_fit(fast), factor.reduced_rank_fit(slow)
        for key in ("left", "right", "errors"):
            assert np.array_equal(getattr(a, key), getattr(b, key)), key


@pytest.mark.parametrize("outputs", [(), ("emb",)])
def test_sliced_sensitivity_is_the_error_of_the_split_model(outputs):
    rng = np.random.default_rng(1)
    model = _net(rng)
    layers, _ = find_layers(model, {"matmul", "gemm"}, set())
    calib = Calib({"x": rng.standard_normal((40, 4, 16)).astype(np.float32)})
    stats = original_stats(model, layers, calib.batches(16), None)
    ranks = {layer.name: max(1, layer.out_features // 3) for layer in layers}
    opened = OpenWeights(model, layers, outputs)
    fits, arrays, probes, splits = {}, {}, {}, {}
    for layer in layers:
        fit = factor.reduced_rank_fit(stats[layer.name])
        left, right, shift = factor.projection_at(fit, stats[layer.name], ranks[layer.name])
        bias = layer.bias + shift
        arrays[layer.name] = opened.set(layer.name, layer.weight @ left @ right, bias)
        probes[layer.name] = float(fit.errors[ranks[layer.name]])
        editor = Editor(model)
        editor.split_matmul(layer, layer.weight @ left, right, bias, np.float32)
        splits[layer.name] = editor.finish()
    measured = sensitivity.measure(model, opened, probes, arrays.get, calib, 16, 2, outputs=outputs)
    assert list(measured) == list(probes)
    feeds = list(calib.batches(16))[:2]
    keep = list(outputs) or ["r2", "emb"]
    reference = [{k: v for k, v in TensorTap(model, [])(f).items() if k in keep} for f in feeds]
    for name, split in splits.items():
        whole = mean_relative_error(reference, [TensorTap(split, [])(f) for f in feeds]) / probes[name]
        assert measured[name] == pytest.approx(whole, rel=1e-4)
        assert whole > 0


def test_original_outputs_are_the_rows_paired_stats_used():
    rng = np.random.default_rng(2)
    model = _net(rng)
    layers, _ = find_layers(model, {"matmul"}, set())
    mask = (rng.random((20, 4)) > 0.3).astype(np.int64)
    calib = Calib({"x": rng.standard_normal((20, 4, 16)).astype(np.float32), "mask": mask})
    original = OriginalOutputs(model, layers, layers[1:], calib.batches(8), "mask")
    assert set(original.rows) == {layer.name for layer in layers[1:]}
    tap = TensorTap(model, [layer.out_tensor for layer in layers])
    rows = original.take(layers[2].name)
    assert layers[2].name not in original.rows
    for feed, got in zip(calib.batches(8), rows):
        y = tap(feed)[layers[2].out_tensor]
        (want,), _ = _drop_masked([y], _row_weights(layers[2], y, feed, "mask"))
        assert np.array_equal(got, want) and got.shape[-2] == int(feed["mask"].sum())


def test_taps_on_the_part_up_to_the_layers_are_the_whole_models():
    rng = np.random.default_rng(3)
    model = _net(rng)
    model = onnx.shape_inference.infer_shapes(model)  # value_info kept in the part, as a cleaned model has it
    layers, _ = find_layers(model, {"matmul", "gemm"}, set())
    feed = {"x": rng.standard_normal((5, 4, 16)).astype(np.float32)}
    for layer in layers:
        part = up_to(model, [layer.out_tensor])
        assert [n.name for n in part.graph.node] == [n.name for n in model.graph.node][:list(model.graph.node).index(layer.node) + 1]
        whole, cut = TensorTap(model, [layer.out_tensor])(feed), TensorTap(part, [layer.out_tensor])(feed)
        assert np.array_equal(whole[layer.out_tensor], cut[layer.out_tensor])
    looped = _net(rng)
    body = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "b", [], [_vi("y", None)])
    looped.graph.node.append(helper.make_node("If", ["cond"], ["z"], then_branch=body, else_branch=body))
    assert up_to(looped, [layers[0].out_tensor]) is looped  # subgraphs may read outer tensors unnamed: whole
