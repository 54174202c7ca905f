"""CSE, weight tying, Cast no-ops and chains, neutral elements; the engine's fixpoint and reasons."""
import numpy as np
from onnx import TensorProto, helper

from rewrite_case import assert_fires, assert_refuses, f32, model, ops, rewrite


def test_cse_merges_identical_nodes_with_symbolic_batch():
    nodes = [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Relu", ["x"], ["b"]),
             helper.make_node("Add", ["a", "k1"], ["c"]), helper.make_node("Add", ["b", "k2"], ["d"]),
             helper.make_node("Mul", ["c", "d"], ["y"])]
    m = model(nodes, [("x", ["N", 4])], [("y", ["N", 4])], {"k1": np.ones(4, np.float32) * 2, "k2": np.ones(4, np.float32) * 2})
    out, counts = assert_fires(m, "cse", times=2)
    assert ops(out) == ["Relu", "Add", "Mul"] and counts["weight_tying"] == 1


def test_cse_leaves_random_ops_and_different_attributes():
    nodes = [helper.make_node("RandomNormalLike", ["x"], ["a"], seed=1.0), helper.make_node("RandomNormalLike", ["x"], ["b"], seed=1.0),
             helper.make_node("LeakyRelu", ["x"], ["c"], alpha=0.1), helper.make_node("LeakyRelu", ["x"], ["d"], alpha=0.2),
             helper.make_node("Sum", ["a", "b", "c", "d"], ["y"])]
    m = model(nodes, [("x", ["N", 4])], [("y", ["N", 4])])
    out, counts, _ = rewrite(m)
    assert "cse" not in counts and len(out.graph.node) == 5


def test_weight_tying_shares_identical_constants_only():
    w = f32(4)
    nodes = [helper.make_node("Add", ["x", "a"], ["p"]), helper.make_node("Add", ["p", "b"], ["q"]),
             helper.make_node("Add", ["q", "c"], ["y"])]
    m = model(nodes, [("x", ["N", 4])], [("y", ["N", 4])], {"a": w, "b": w.copy(), "c": w.astype(np.float64).astype(np.float32) + 1})
    out, counts, _ = rewrite(m)
    assert counts["weight_tying"] == 1 and len(out.graph.initializer) == 2


def test_cast_noop_and_widening_chain():
    nodes = [helper.make_node("Cast", ["x"], ["a"], to=TensorProto.FLOAT), helper.make_node("Cast", ["a"], ["b"], to=TensorProto.DOUBLE),
             helper.make_node("Cast", ["b"], ["y"], to=TensorProto.FLOAT16)]
    m = model(nodes, [("x", ["N", 4])], [("y", ["N", 4], TensorProto.FLOAT16)])
    out, counts = assert_fires(m, "cast_noop", rtol=0, atol=0)
    assert counts["cast_chain"] == 1 and ops(out) == ["Cast"]


def test_cast_chain_refuses_narrowing_first():
    nodes = [helper.make_node("Cast", ["x"], ["a"], to=TensorProto.FLOAT16), helper.make_node("Cast", ["a"], ["y"], to=TensorProto.FLOAT)]
    m = model(nodes, [("x", ["N", 4])], [("y", ["N", 4])])
    assert_refuses(m, "cast_chain", "may round")
    nodes = [helper.make_node("Cast", ["x"], ["a"], to=TensorProto.INT8), helper.make_node("Cast", ["a"], ["y"], to=TensorProto.INT64)]
    m = model(nodes, [("x", ["N", 4], TensorProto.INT32)], [("y", ["N", 4], TensorProto.INT64)])
    assert_refuses(m, "cast_chain", "may round")


def test_neutral_elements_removed():
    nodes = [helper.make_node("Mul", ["one", "x"], ["a"]), helper.make_node("Add", ["a", "zero"], ["b"]),
             helper.make_node("Div", ["b", "one"], ["c"]), helper.make_node("Sub", ["c", "zero"], ["d"]), helper.make_node("Relu", ["d"], ["y"])]
    m = model(nodes, [("x", ["N", 4])], [("y", ["N", 4])], {"one": np.ones((1, 4), np.float32), "zero": np.zeros(4, np.float32)})
    out, _ = assert_fires(m, "neutral_element", times=4, rtol=0, atol=0)
    assert ops(out) == ["Relu"]


def test_neutral_element_refuses_broadcast_and_reversed_sub():
    nodes = [helper.make_node("Mul", ["x", "one"], ["y"])]
    m = model(nodes, [("x", ["N", 1])], [("y", ["N", 4])], {"one": np.ones(4, np.float32)})
    assert_refuses(m, "neutral_element", "broadcast")
    m = model([helper.make_node("Sub", ["zero", "x"], ["y"])], [("x", ["N", 4])], [("y", ["N", 4])], {"zero": np.zeros(4, np.float32)})
    assert_refuses(m, "neutral_element", "no constant operand")


def test_graph_output_is_kept_when_removal_would_rename_it():
    # the Relu's output feeds the no-op and is itself a graph output: removing the no-op would need an
    # Identity, so the rule refuses
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["r", "one"], ["y"])]
    m = model(nodes, [("x", ["N", 4])], [("r", ["N", 4]), ("y", ["N", 4])], {"one": np.ones(4, np.float32)})
    assert_refuses(m, "neutral_element", "graph output")


def test_cse_leaves_custom_domain_ops():
    nodes = [helper.make_node("Noise", ["x"], ["a"], domain="my.ops"), helper.make_node("Noise", ["x"], ["b"], domain="my.ops"),
             helper.make_node("Add", ["a", "b"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.ops", 1)])
    out, counts, _ = rewrite(m)
    assert "cse" not in counts and len(out.graph.node) == 3
