"""The bare command's lossless folding (issue 10): Shape start/end, symbolic dims kept, the size threshold
checked before allocating, custom-domain ops left alone with validation skipped, external-data output."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxslim
from onnxslim.graph import load_model, save_model
from onnxslim.passes.cleanup import CleanupConfig, run
from onnxslim.progress import silent


def _model(nodes, inputs, outputs, inits=(), opset=18, extra_opsets=()):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                              [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
                              [numpy_helper.from_array(v, k) for k, v in dict(inits).items()])
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


def _run(model, feed):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def _ops(model):
    return sorted(n.op_type for n in model.graph.node)


@pytest.mark.parametrize("start,end", [(1, 3), (-2, None), (0, -1), (2, 2), (-10, 10)])
def test_shape_start_end_folds_to_the_dims_it_reads(start, end):
    """onnx-graphsurgeon's fold returned the whole shape for Shape(start, end): 7 wrong node cases."""
    attrs = {"start": start} | ({"end": end} if end is not None else {})
    model = _model([helper.make_node("Shape", ["x"], ["s"], **attrs),
                    helper.make_node("Cast", ["s"], ["y"], to=TensorProto.INT64)],
                   [("x", TensorProto.FLOAT, [2, 3, 4, 5])], [("y", TensorProto.INT64, None)])
    out = run(model).model
    x = np.zeros((2, 3, 4, 5), np.float32)
    np.testing.assert_array_equal(_run(out, {"x": x})[0], _run(model, {"x": x})[0])
    assert "Shape" not in _ops(out)


def _reshape_by_static_dims(opset=18):
    """x [N, 6, 4] -> Reshape to [-1, 6 * 4] with the 6 and 4 read from Shape (batch N stays symbolic)."""
    def i64(v):
        return np.array(v, np.int64)
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "one"], ["c"], axis=0),
             helper.make_node("Shape", ["x"], ["s2"], start=2),
             helper.make_node("Unsqueeze", ["c", "ax"], ["cu"]),
             helper.make_node("Mul", ["cu", "s2"], ["feat"]),
             helper.make_node("Concat", ["m1", "feat"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["y"])]
    return _model(nodes, [("x", TensorProto.FLOAT, ["N", 6, 4])], [("y", TensorProto.FLOAT, None)],
                  {"one": i64(1), "ax": i64([0]), "m1": i64([-1])}, opset=opset)


def test_symbolic_batch_shape_subgraph_folds_and_keeps_the_dynamic_dim():
    model = _reshape_by_static_dims()
    out = run(model).model
    assert _ops(out) == ["Reshape"]
    reshape = out.graph.node[0]
    shape = numpy_helper.to_array(next(t for t in out.graph.initializer if t.name == reshape.input[1]))
    np.testing.assert_array_equal(shape, [-1, 24])
    assert out.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    for batch in (1, 5):  # the folded model runs at any batch, with the original's outputs
        x = np.random.default_rng(batch).standard_normal((batch, 6, 4)).astype(np.float32)
        np.testing.assert_array_equal(_run(out, {"x": x})[0], _run(model, {"x": x})[0])


def test_size_threshold_leaves_a_huge_constant_of_shape_unfolded():
    """A 4 TB ConstantOfShape: computing it would fail or swap; the threshold is checked before."""
    model = _model([helper.make_node("ConstantOfShape", ["shape"], ["big"],
                                     value=numpy_helper.from_array(np.array([1.0], np.float32))),
                    helper.make_node("ReduceSum", ["big"], ["y"], keepdims=0)],
                   [], [("y", TensorProto.FLOAT, None)], {"shape": np.array([2**20, 2**20], np.int64)})
    result = run(model, CleanupConfig(size_threshold=2**20))
    assert _ops(result.model) == ["ConstantOfShape", "ReduceSum"]
    assert any("ConstantOfShape" in note and "size-threshold" in note for note in result.report["left_unfolded_size"])


def test_size_threshold_allows_a_small_fold():
    model = _model([helper.make_node("ConstantOfShape", ["shape"], ["c"],
                                     value=numpy_helper.from_array(np.array([2.0], np.float32))),
                    helper.make_node("Add", ["x", "c"], ["y"])],
                   [("x", TensorProto.FLOAT, [4, 4])], [("y", TensorProto.FLOAT, None)],
                   {"shape": np.array([4, 4], np.int64)})
    assert _ops(run(model, CleanupConfig(size_threshold=64)).model) == ["Add"]  # 4x4 float32 = 64 bytes
    assert _ops(run(model, CleanupConfig(size_threshold=63)).model) == ["Add", "ConstantOfShape"]


def _custom_domain_model():
    """A folded-away Add of constants, then an op of a domain onnxruntime does not know."""
    nodes = [helper.make_node("Add", ["a", "b"], ["ab"]),
             helper.make_node("Mul", ["x", "ab"], ["xm"]),
             helper.make_node("MyOp", ["xm"], ["y"], domain="my.domain")]
    return _model(nodes, [("x", TensorProto.FLOAT, [2, 3])], [("y", TensorProto.FLOAT, [2, 3])],
                  {"a": np.ones(3, np.float32), "b": np.ones(3, np.float32)}, extra_opsets=[("my.domain", 1)])


def test_custom_domain_op_does_not_stop_folding_and_validation_is_skipped():
    result = onnxslim.optimize(_custom_domain_model(), latency=False, progress=silent)
    assert _ops(result.model) == ["Mul", "MyOp"]
    assert "skipped" in result.report["validation"]
    assert "original" in result.report["validation"]["skipped"]


def test_custom_domain_with_min_cosine_fails():
    with pytest.raises(onnxslim.SlimError, match="min-cosine"):
        onnxslim.optimize(_custom_domain_model(), latency=False, progress=silent, min_cosine=0.9)


def test_dynamic_dims_are_validated_at_a_size_the_model_runs_with():
    model = _reshape_by_static_dims()
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "C"  # a non-batch dynamic dim
    result = onnxslim.optimize(model, latency=False, progress=silent)
    validation = result.report["validation"]
    # no refusal, no --input-shape: the size comes from the shape search (runshapes) and is reported
    assert "skipped" not in validation and validation["outputs"]["y"]["cosine"] > 0.9999
    assert validation["input_shapes"]["x"]["source"] in ("auto", "model")


def test_external_data_output_loads_and_equals(tmp_path):
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)  # 16 KB: goes to the data file
    model = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", TensorProto.FLOAT, [2, 64])],
                   [("y", TensorProto.FLOAT, [2, 64])], {"w": w})
    out = tmp_path / "out.onnx"
    save_model(model, out, external_data=True)
    assert (tmp_path / "out.onnx.data").stat().st_size >= w.nbytes
    assert out.stat().st_size < w.nbytes  # the weights are not inline
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    loaded = load_model(out)
    np.testing.assert_array_equal(numpy_helper.to_array(loaded.graph.initializer[0]), w)
    x = np.ones((2, 64), np.float32)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], x @ w)


def test_report_counts_each_rule():
    result = run(_reshape_by_static_dims())
    rules = result.report["rules"]
    assert rules["static_shape_reads"] >= 1 and rules["constant_folding"] >= 1
    assert all(isinstance(v, int) and v > 0 for v in rules.values())


def test_rewrite_rules_package_counts_slot_in(monkeypatch):
    """The rules of onnxslim.passes.rewrite (another package) run on the gs graph after folding; their
    counts join the report's "rules"."""
    import sys
    import types
    calls = []

    def apply_rules(graph, skip=(), opset=None):
        calls.append(len(graph.nodes))
        return {"fake_rule": 2}
    import onnxslim.passes.cleanup as cleanup_pkg
    monkeypatch.setattr(cleanup_pkg, "rewrite", types.SimpleNamespace(apply_rules=apply_rules))
    result = run(_reshape_by_static_dims())
    assert calls == [1] and result.report["rules"]["fake_rule"] == 2
    assert "fake_rule" not in run(_reshape_by_static_dims(), CleanupConfig(rules=False)).report["rules"]
