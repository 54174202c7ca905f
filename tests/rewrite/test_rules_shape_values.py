"""Rules on shape arithmetic and chains of data-movement ops (issue 10, the detection/OCR models): Slice
chains, no-op Pad and Split, Concats that reassemble a shape, Reshape to its own shape with -1, static
reads of partly symbolic shapes, and target entries that are provably the input's own dim."""
import numpy as np
from onnx import TensorProto, helper

from rewrite_case import assert_fires, assert_refuses, f32, model, ops

I64 = np.int64


def _slice(name, x, out, start, end, axis, step=1):
    consts = {f"{name}_{k}": np.array([v], I64) for k, v in (("s", start), ("e", end), ("a", axis), ("t", step))}
    return helper.make_node("Slice", [x, *consts], [out]), consts


def test_slice_chain_on_disjoint_axes_becomes_one_slice_per_consumer():
    first, c1 = _slice("p", "x", "a", 0, 9, 1, 2)         # rows 0, 2, 4, 6, 8
    second, c2 = _slice("q", "a", "b", 1, 2**62, 2, 2)    # then odd columns
    third, c3 = _slice("r", "a", "c", 0, -1, -1)          # then all but the last column
    nodes = [first, second, third, helper.make_node("Relu", ["b"], ["y"]), helper.make_node("Relu", ["c"], ["z"])]
    m = model(nodes, [("x", ["N", 9, "W"])], [("y", ["N", 5, "V"]), ("z", ["N", 5, "U"])], {**c1, **c2, **c3})
    out, _ = assert_fires(m, "slice_chain", times=2, sizes=(3, 8))
    assert ops(out).count("Slice") == 2


def test_slice_chain_refuses_the_same_axis():
    first, c1 = _slice("p", "x", "a", 1, 9, 1)
    second, c2 = _slice("q", "a", "y", 0, 3, -2)  # axis -2 is axis 1 again
    m = model([first, second], [("x", ["N", 9, 4])], [("y", ["N", 3, 4])], {**c1, **c2})
    assert_refuses(m, "slice_chain", "share an axis")


def test_zero_pad_and_single_output_split_are_removed():
    nodes = [helper.make_node("Pad", ["x", "pads"], ["a"], mode="reflect"), helper.make_node("Split", ["a", "sp"], ["b"], axis=1),
             helper.make_node("Relu", ["b"], ["y"])]
    m = model(nodes, [("x", ["N", 6])], [("y", ["N", 6])], {"pads": np.zeros(4, I64), "sp": np.array([6], I64)})
    out, counts = assert_fires(m, "pad_noop")
    assert counts["split_single"] == 1 and ops(out) == ["Relu"]
    m = model(nodes[:1] + [helper.make_node("Relu", ["a"], ["y"])], [("x", ["N", 6])], [("y", ["N", 7])],
              {"pads": np.array([0, 0, 0, 1], I64)})
    assert_refuses(m, "pad_noop", "not 0")


def _shape_pieces(indices):
    """Shape(x) -> one Unsqueeze(Gather(., i)) per index -> Concat -> Expand a [1, 1, 1] constant to it."""
    nodes = [helper.make_node("Shape", ["x"], ["s"])]
    inits = {"one": np.ones((1, 1, 1), np.float32), "ax": np.array([0], I64), "m1": np.array([-1], I64)}
    pieces = []
    for i in indices:
        inits[f"i{i}"] = np.array(i, I64)
        nodes += [helper.make_node("Gather", ["s", f"i{i}"], [f"g{i}"], axis=0), helper.make_node("Unsqueeze", [f"g{i}", "ax"], [f"u{i}"])]
        pieces.append(f"u{i}")
    return nodes, pieces, inits


def test_concat_of_a_shapes_elements_is_the_shape():
    nodes, pieces, inits = _shape_pieces([0, 1, -1])
    nodes += [helper.make_node("Concat", pieces, ["t"], axis=0), helper.make_node("Expand", ["one", "t"], ["e"]),
              helper.make_node("Add", ["e", "x"], ["y"])]
    m = model(nodes, [("x", ["N", "H", "W"])], [("y", ["N", "H", "W"])], inits)
    out, _ = assert_fires(m, "concat_reassemble", sizes=(2, 5))
    assert sorted(ops(out)) == ["Add", "Expand", "Shape"]


def test_concat_of_part_of_a_shape_takes_one_slice():
    nodes, pieces, inits = _shape_pieces([0, 1])
    inits["k1"] = np.array([1], I64)
    nodes += [helper.make_node("Concat", [*pieces, "k1"], ["t"], axis=0), helper.make_node("Expand", ["one", "t"], ["e"]),
              helper.make_node("Add", ["e", "x"], ["y"])]
    m = model(nodes, [("x", ["N", "H", "W"])], [("y", ["N", "H", "W"])], inits)
    out, _ = assert_fires(m, "concat_reassemble", sizes=(2, 5))
    assert "Gather" not in ops(out) and ops(out).count("Slice") == 1


def test_concat_reassemble_refuses_out_of_order_elements():
    nodes, pieces, inits = _shape_pieces([1, 0])
    nodes += [helper.make_node("Concat", pieces, ["t"], axis=0), helper.make_node("Reshape", ["x", "t"], ["y"])]
    m = model(nodes, [("x", ["N", "H"])], [("y", ["H", "N"])], inits)
    assert_refuses(m, "concat_reassemble", "consecutive elements")


def test_reshape_to_its_own_shape_with_minus_one_is_removed():
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["a"]), helper.make_node("Reshape", ["a", "keep"], ["b"]),
             helper.make_node("Relu", ["b"], ["y"])]
    m = model(nodes, [("x", ["N"])], [("y", ["N", 1])], {"flat": np.array([-1], I64), "keep": np.array([-1, 1], I64)})
    out, counts = assert_fires(m, "reshape_noop", sizes=(0, 1, 6))
    assert ops(out) == ["Reshape", "Relu"]
    m = model([helper.make_node("Reshape", ["x", "t"], ["y"])], [("x", ["N", 4, 5])], [("y", ["N", 20])], {"t": np.array([0, -1], I64)})
    assert_refuses(m, "reshape_noop", "rank changes")


def test_static_dim_read_from_a_partly_symbolic_shape_becomes_constant():
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "i"], ["c"], axis=0),
             helper.make_node("Cast", ["c"], ["cf"], to=TensorProto.FLOAT), helper.make_node("Mul", ["x", "cf"], ["y"])]
    m = model(nodes, [("x", ["N", 7])], [("y", ["N", 7])], {"i": np.array(-1, I64)})
    out, _ = assert_fires(m, "shape_static_read")
    assert "Shape" not in ops(out)


def _copy_target(source: str, nodes: list, out_shape, inputs, inits):
    """y = Reshape(h, Concat(Unsqueeze(Gather(Shape(source), 0)), [1], [-1])), the OCR models' last step."""
    nodes = nodes + [helper.make_node("Shape", [source], ["s"]), helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
                     helper.make_node("Unsqueeze", ["n", "ax"], ["nu"]), helper.make_node("Concat", ["nu", "one", "m1"], ["t"], axis=0),
                     helper.make_node("Reshape", ["h", "t"], ["y"])]
    inits = {**inits, "i0": np.array(0, I64), "ax": np.array([0], I64), "one": np.array([1], I64), "m1": np.array([-1], I64)}
    return model(nodes, inputs, [("y", out_shape)], inits)


def test_target_entry_traced_to_the_inputs_own_dim_becomes_a_copy():
    # x -> Gemm: the Gemm's rows are x's rows, so Shape(x)[0] is the Gemm output's dim 0
    gemm = [helper.make_node("Gemm", ["x", "w"], ["h"])]
    m = _copy_target("x", gemm, ["N", 1, 6], [("x", ["N", 8])], {"w": f32(8, 6)})
    out, _ = assert_fires(m, "reshape_copy_dim", sizes=(1, 5))  # size 0: the original rejects [0, 1, -1] too
    assert ops(out) == ["Gemm", "Reshape"]


def test_copy_traced_through_lstm_transpose_and_minus_one():
    # LSTM Y [S, 1, 1, 3] -> Reshape [-1, 3]: the -1 is S (the element count fixes it) -> MatMul rows
    nodes = [helper.make_node("LSTM", ["x", "W", "R"], ["Y"], hidden_size=3),
             helper.make_node("Reshape", ["Y", "flat"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["h"])]
    inits = {"W": f32(1, 12, 4), "R": f32(1, 12, 3), "flat": np.array([-1, 3], I64), "w2": f32(3, 5)}
    m = _copy_target("Y", nodes, ["S", 1, 5], [("x", ["S", 1, 4])], inits)
    out, _ = assert_fires(m, "reshape_copy_dim", sizes=(1, 4))
    assert "Shape" not in ops(out)


def test_copy_refused_for_a_dim_that_only_shares_a_declared_name():
    # x and z both declare "N", but nothing in the graph makes them equal: no rewrite
    m = _copy_target("z", [helper.make_node("Gemm", ["x", "w"], ["h"])], ["N", 1, 6], [("x", ["N", 8]), ("z", ["N", 3])], {"w": f32(8, 6)})
    assert_refuses(m, "reshape_copy_dim", "provably")


def test_dims_refuse_broadcast_of_two_unrelated_dims():
    # Add(x [N, 4], z [M, 4]) has dim 0 = N or M (one of them may be 1): no origin, so no copy
    nodes = [helper.make_node("Add", ["x", "z"], ["h"])]
    m = _copy_target("x", nodes, ["N", 1, 4], [("x", ["N", 4]), ("z", ["M", 4])], {})
    assert_refuses(m, "reshape_copy_dim", "provably")


def test_dims_trace_unit_broadcast_and_transpose():
    from onnxslim.graph import infer_shapes, to_graph
    from onnxslim.passes.rewrite.dims import Dims
    nodes = [helper.make_node("Mul", ["x", "s"], ["a"]), helper.make_node("Transpose", ["a"], ["t"], perm=[1, 0, 2]),
             helper.make_node("Reshape", ["t", "r"], ["y"])]
    m = model(nodes, [("x", ["N", "C", 8])], [("y", ["C", "N", 2, 4])], {"s": f32(1, 1, 8), "r": np.array([0, 0, 2, -1], I64)})
    g = to_graph(infer_shapes(m))
    t, dims = g.tensors(), Dims()
    assert dims.same(t["y"], 0, t["x"], 1) and dims.same(t["y"], 1, t["x"], 0)
    assert not dims.same(t["y"], 0, t["x"], 0)
    assert dims.origin(t["y"], 3) == 4
