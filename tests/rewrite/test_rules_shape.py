"""Eliminations of data-movement ops: Reshape, Transpose, (Un)squeeze, Slice, Concat, Expand, Reduce."""
import numpy as np
from onnx import TensorProto, helper

from rewrite_case import assert_fires, assert_refuses, model, ops

I64 = np.int64


def test_reshape_chain_and_noop():
    nodes = [helper.make_node("Reshape", ["x", "s1"], ["a"]), helper.make_node("Reshape", ["a", "s2"], ["y"])]
    m = model(nodes, [("x", ["N", 4, 6])], [("y", ["N", 24])], {"s1": np.array([0, 2, 12], I64), "s2": np.array([-1, 24], I64)})
    assert ops(assert_fires(m, "reshape_chain")[0]) == ["Reshape"]
    nodes = [helper.make_node("Reshape", ["x", "s"], ["a"]), helper.make_node("Relu", ["a"], ["y"])]
    m = model(nodes, [("x", ["N", 4, 6])], [("y", ["N", 4, 6])], {"s": np.array([0, 4, 6], I64)})
    assert ops(assert_fires(m, "reshape_noop")[0]) == ["Relu"]


def test_reshape_chain_refuses_copy_of_intermediate_dims():
    nodes = [helper.make_node("Reshape", ["x", "s1"], ["a"]), helper.make_node("Reshape", ["a", "s2"], ["y"])]
    m = model(nodes, [("x", ["N", 4, 6])], [("y", ["N", 24])], {"s1": np.array([-1, 2, 12], I64), "s2": np.array([0, 24], I64)})
    assert_refuses(m, "reshape_chain", "copies dims")


def test_reshape_chain_resolves_copies_the_first_fixed():
    nodes = [helper.make_node("Reshape", ["x", "s1"], ["a"]), helper.make_node("Reshape", ["a", "s2"], ["y"])]
    m = model(nodes, [("x", ["N", 4, 6])], [("y", ["N", 2, 12])], {"s1": np.array([0, 2, 3, 4], I64), "s2": np.array([0, 0, -1], I64)})
    assert ops(assert_fires(m, "reshape_chain")[0]) == ["Reshape"]


def test_transpose_pair_composes_and_cancels():
    nodes = [helper.make_node("Transpose", ["x"], ["a"], perm=[0, 2, 3, 1]), helper.make_node("Transpose", ["a"], ["b"], perm=[0, 3, 1, 2]),
             helper.make_node("Relu", ["b"], ["c"]), helper.make_node("Transpose", ["c"], ["d"], perm=[1, 0, 2, 3]),
             helper.make_node("Transpose", ["d"], ["y"], perm=[0, 1, 3, 2])]
    m = model(nodes, [("x", ["N", 3, 4, 5])], [("y", [3, "N", 5, 4])])
    out, _ = assert_fires(m, "transpose_pair", times=2)
    assert ops(out) == ["Relu", "Transpose"]


def test_transpose_of_unit_axes_becomes_reshape():
    nodes = [helper.make_node("Transpose", ["x"], ["y"], perm=[0, 2, 1, 3])]
    m = model(nodes, [("x", ["N", 1, 7, 5])], [("y", ["N", 7, 1, 5])])
    assert ops(assert_fires(m, "transpose_as_reshape")[0]) == ["Reshape"]


def test_transpose_as_reshape_refuses_real_reorder():
    m = model([helper.make_node("Transpose", ["x"], ["y"], perm=[0, 2, 1])], [("x", ["N", 2, 7])], [("y", ["N", 7, 2])])
    assert_refuses(m, "transpose_as_reshape", "change order")


def test_unsqueeze_chain_attr_and_input_forms():
    nodes = [helper.make_node("Unsqueeze", ["x"], ["a"], axes=[0]), helper.make_node("Unsqueeze", ["a"], ["y"], axes=[3])]
    m = model(nodes, [("x", ["N", 5])], [("y", [1, "N", 5, 1])], opset=11)
    assert ops(assert_fires(m, "unsqueeze_chain")[0]) == ["Unsqueeze"]
    nodes = [helper.make_node("Unsqueeze", ["x", "a1"], ["a"]), helper.make_node("Unsqueeze", ["a", "a2"], ["y"])]
    m = model(nodes, [("x", ["N", 5])], [("y", ["N", 1, 1, 5])], {"a1": np.array([1], I64), "a2": np.array([-3], I64)})
    assert ops(assert_fires(m, "unsqueeze_chain")[0]) == ["Unsqueeze"]


def test_squeeze_chain_and_unsqueeze_squeeze():
    nodes = [helper.make_node("Squeeze", ["x", "a1"], ["a"]), helper.make_node("Squeeze", ["a", "a2"], ["y"])]
    m = model(nodes, [("x", [1, "N", 1, 5, 1])], [("y", ["N", 5])], {"a1": np.array([2], I64), "a2": np.array([0, -1], I64)})
    assert ops(assert_fires(m, "squeeze_chain")[0]) == ["Squeeze"]
    nodes = [helper.make_node("Unsqueeze", ["x", "a"], ["u"]), helper.make_node("Squeeze", ["u", "a"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    m = model(nodes, [("x", ["N", 5])], [("y", ["N", 5])], {"a": np.array([1], I64)})
    assert ops(assert_fires(m, "unsqueeze_squeeze")[0]) == ["Relu"]


def test_reduce_then_unsqueeze_keeps_dims():
    nodes = [helper.make_node("ReduceMean", ["x"], ["r"], axes=[-1], keepdims=0), helper.make_node("Unsqueeze", ["r", "a"], ["y"])]
    m = model(nodes, [("x", ["N", 4, 6])], [("y", ["N", 4, 1])], {"a": np.array([2], I64)}, opset=17)
    assert ops(assert_fires(m, "reduce_unsqueeze")[0]) == ["ReduceMean"]
    nodes = [helper.make_node("ReduceSum", ["x", "ax"], ["r"], keepdims=0), helper.make_node("Unsqueeze", ["r", "a"], ["y"])]
    m = model(nodes, [("x", ["N", 4, 6])], [("y", ["N", 6, 1])], {"ax": np.array([1], I64), "a": np.array([2], I64)})
    assert_refuses(m, "reduce_unsqueeze", "not the reduced axes")


def test_noop_slice_single_concat_expand():
    nodes = [helper.make_node("Slice", ["x", "st", "en", "ax"], ["a"]), helper.make_node("Concat", ["a"], ["b"], axis=1),
             helper.make_node("Expand", ["b", "sh"], ["c"]), helper.make_node("Relu", ["c"], ["y"])]
    inits = {"st": np.array([0, -9], I64), "en": np.array([2**63 - 1, 9], I64), "ax": np.array([0, 1], I64), "sh": np.array([1, 9], I64)}
    m = model(nodes, [("x", ["N", 9])], [("y", ["N", 9])], inits)
    out, counts = assert_fires(m, "slice_noop")
    assert counts["concat_single"] == 1 and counts["expand_noop"] == 1 and ops(out) == ["Relu"]


def test_slice_that_crops_and_expand_that_broadcasts_are_kept():
    nodes = [helper.make_node("Slice", ["x", "st", "en", "ax"], ["y"])]
    m = model(nodes, [("x", ["N", 9])], [("y", ["N", 8])], {"st": np.array([1], I64), "en": np.array([9], I64), "ax": np.array([1], I64)})
    assert_refuses(m, "slice_noop", "start")
    m = model([helper.make_node("Expand", ["x", "sh"], ["y"])], [("x", ["N", 1])], [("y", ["N", 4])], {"sh": np.array([1, 4], I64)})
    assert_refuses(m, "expand_noop", "broadcast")


def test_nested_concat_on_same_axis_is_flattened():
    nodes = [helper.make_node("Concat", ["x", "x"], ["a"], axis=-1), helper.make_node("Concat", ["a", "x"], ["y"], axis=1)]
    m = model(nodes, [("x", ["N", 3])], [("y", ["N", 9])])
    assert ops(assert_fires(m, "concat_flatten")[0]) == ["Concat"]
    nodes = [helper.make_node("Concat", ["x", "x"], ["a"], axis=0), helper.make_node("Concat", ["a", "z"], ["y"], axis=1)]
    m = model(nodes, [("x", [2, 3]), ("z", [4, 3])], [("y", [4, 6])])
    assert_refuses(m, "concat_flatten", "same axis")


def _reshape_by_runtime_dim(*rest: str):
    """y = Reshape(x, Concat(Unsqueeze(Gather(Shape(x), 0)), second)): the batch read at run time."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "ax"], ["nu"]), helper.make_node("Concat", ["nu", *rest], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["y"])]
    return nodes, {"i0": np.array(0, I64), "ax": np.array([0], I64), "k": np.array([24], I64), "k0": np.array([0], I64),
                   "k6": np.array([6], I64)}


def test_reshape_infers_the_one_runtime_dim():
    nodes, consts = _reshape_by_runtime_dim("k")
    m = model(nodes, [("x", ["N", 4, 6])], [("y", ["N", 24])], consts)
    out, _ = assert_fires(m, "reshape_infer_dim")  # outputs equal at two batch sizes (assert_fires checks)
    assert "Shape" not in ops(out) and "Gather" not in ops(out)


def test_reshape_infer_dim_refuses_a_copy_entry():
    nodes, consts = _reshape_by_runtime_dim("k0", "k6")  # [N, copy of 4, 6]
    m = model(nodes, [("x", ["N", 4, 6])], [("y", ["N", 4, 6])], consts)
    assert_refuses(m, "reshape_infer_dim", "0 or -1")
