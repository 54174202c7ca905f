"""Where pruning stops: ops without a rule or normalizing over the channel axis, --exclude, a tensor read
inside a subgraph; and a zero ratio leaves the graph as it was."""
from __future__ import annotations

import numpy as np
import pytest

from oracle import GraphBuilder, check_oracle
from rule_cases import C, X, sandwich, se_block

from onnxslim.channels import analyze
from onnxslim.passes import cleanup


FROZEN = {
    "LayerNormalization": (lambda b, t: b.op("LayerNormalization", [b.op("Transpose", [t], perm=[0, 2, 3, 1]), b.randn(C), b.randn(C)]),
                           "LayerNormalization normalizes over this axis"),
    "Softmax": (lambda b, t: b.op("Softmax", [t], axis=1), "Softmax normalizes over this axis"),
    "op without a rule": (lambda b, t: b.op("CumSum", [t, b.const(np.array(1, np.int64))]), "CumSum 'CumSum_2' has no channel rule"),
    "ReduceChannels": (lambda b, t: b.op("ReduceSum", [t, b.const(np.array([1], np.int64))], keepdims=1), "reduces over this axis"),
    "StridedSlice": (lambda b, t: b.op("Slice", [t, b.const(np.array([0], np.int64)), b.const(np.array([8], np.int64)), b.const(np.array([1], np.int64)), b.const(np.array([2], np.int64))]), "strided Slice"),
}


@pytest.mark.parametrize("name", sorted(FROZEN))
def test_unsupported_freezes_with_reason(name):
    middle, reason = FROZEN[name]
    b = GraphBuilder(0)
    out = middle(b, b.conv("x", 3, C, k=3))
    model = b.model(X, [out])
    clean = cleanup.run(model).model
    analysis = analyze(clean)
    group = next(g for g in analysis.groups if any(s.role == "source" and s.op == "Conv" for s in g.spaces))
    assert group.prunable == 0
    assert any(reason in r for r in group.reasons), group.reasons


def test_exclude_freezes_the_node():
    model = sandwich(lambda b, t: b.op("Relu", [t]))(0)
    clean = cleanup.run(model).model
    relu = next(n.name for n in clean.graph.node if n.op_type == "Relu")
    analysis = analyze(clean, exclude=[relu])
    assert not analysis.prunable_groups
    assert any("excluded by the user" in r for g in analysis.groups for r in g.reasons)


def test_ratio_zero_leaves_graph_unchanged():
    from onnxslim.passes.prune import PruneConfig, run
    from oracle import run as ort_run
    from onnxslim.inputs import random_feeds
    clean = cleanup.run(se_block(0)).model
    pruned = run(clean, PruneConfig(ratio=0.0, round_to=1)).model
    assert [i.dims for i in pruned.graph.initializer] == [i.dims for i in clean.graph.initializer]
    feed = random_feeds(clean)[0]
    np.testing.assert_array_equal(ort_run(pruned, feed)[0], ort_run(clean, feed)[0])


def test_tensor_read_inside_a_subgraph_is_frozen():
    from onnx import TensorProto, helper
    b = GraphBuilder(0)
    t = b.op("Relu", [b.conv("x", 3, C, k=3)])
    then_out = helper.make_tensor_value_info("then_y", TensorProto.FLOAT, None)
    else_out = helper.make_tensor_value_info("else_y", TensorProto.FLOAT, None)
    then_g = helper.make_graph([helper.make_node("Relu", [t], ["then_y"])], "then", [], [then_out])
    else_g = helper.make_graph([helper.make_node("Neg", [t], ["else_y"])], "else", [], [else_out])
    cond = b.const(np.array(True))
    y = b.op("If", [cond], then_branch=then_g, else_branch=else_g)
    model = b.model(X, [b.conv(y, C, 4)])
    analysis = analyze(model)
    group = next(g for g in analysis.groups if g.n_classes == C and g.members("source"))
    assert group.prunable == 0
    assert any("If" in r for r in group.reasons), group.reasons
