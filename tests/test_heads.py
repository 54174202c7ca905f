"""Attention heads as removal units (issue 13): the oracle on encoder blocks in the torch/transformers form,
static and with dynamic batch/sequence, with named heads removed; MACs go down by what the heads cost."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from onnxslim.channels import EXIT, analyze
from onnxslim.cost import model_cost
from onnxslim.ops.heads import head_layout
from onnxslim.passes import cleanup
from onnxslim.passes.prune.apply import apply_plan

from attention_blocks import attention_op_block, encoder_block, feed
from oracle import run

WIDTH, HEADS, FFN = 32, 4, 48
DIM = WIDTH // HEADS


def head_groups(analysis):
    return [g for g in analysis.prunable_groups if head_layout(analysis, g)]


def zero_heads(model: onnx.ModelProto, removed: dict[str, list[int]]) -> onnx.ModelProto:
    """The original with the output projection's input rows of the removed heads zeroed, written by hand
    (not through the analysis): what removing those heads must compute."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    inits = {t.name: t for t in copy.graph.initializer}
    for node in copy.graph.node:
        if node.name in removed:
            w = onnx.numpy_helper.to_array(inits[node.input[1]]).copy()
            for h in removed[node.name]:
                w[h * DIM:(h + 1) * DIM] = 0
            inits[node.input[1]].CopyFrom(onnx.numpy_helper.from_array(w, node.input[1]))
    return copy


def output_projections(analysis, group) -> list[str]:
    return [s.node for s in group.spaces if s.role == EXIT]


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
def test_heads_are_units_of_one_group_per_layer(dynamic):
    clean = cleanup.run(encoder_block(dynamic=dynamic, layers=2)).model
    analysis = analyze(clean)
    groups = head_groups(analysis)
    assert len(groups) == 2
    for g in groups:
        assert head_layout(analysis, g) == (HEADS, DIM)
        assert g.n_classes == HEADS and g.prunable == HEADS and g.channels == WIDTH
        # Q, K, V are the sources, the output projection the exit, the MatMuls between them members
        assert sum(s.role == "source" for s in g.spaces) == 3
        assert len(output_projections(analysis, g)) == 1


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("removed", [[1], [0, 3], [0, 1, 2]])
def test_removing_heads_equals_zeroing_them(dynamic, removed):
    clean = cleanup.run(encoder_block(dynamic=dynamic, layers=2, seed=len(removed))).model
    analysis = analyze(clean)
    groups = head_groups(analysis)
    plan = {}
    zeroed = {}
    for g in groups:
        mask = np.ones(HEADS, bool)
        mask[removed] = False
        plan[g.id] = mask
        zeroed.update({node: removed for node in output_projections(analysis, g)})
    expected_model = zero_heads(clean, zeroed)
    pruned = apply_plan(analysis, plan, clean)
    onnx.checker.check_model(pruned, full_check=True)
    sizes = [(2, 5), (3, 7)] if dynamic else [(2, 5)]
    for batch, seq in sizes:
        x = feed(batch, seq, WIDTH, seed=seq)
        (expect,), (got,) = run(expected_model, x), run(pruned, x)
        assert got.shape == (batch, seq, WIDTH)
        np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-4)
    # and the heads did something: zeroing them changes the output
    assert not np.allclose(run(clean, feed(2, 5, WIDTH))[0], run(expected_model, feed(2, 5, WIDTH))[0], atol=1e-3)
    shapes = {"x": (2, 5, WIDTH), "attention_mask": (2, 5)}
    before, after = model_cost(clean, shapes)["macs"], model_cost(pruned, shapes)["macs"]
    # per layer and removed head: Q, K, V and the output projection lose S*E*D each, the two attention
    # MatMuls S*S*D each (batch 2)
    per_head = 2 * (4 * 5 * WIDTH * DIM + 2 * 5 * 5 * DIM)
    assert before - after == 2 * len(removed) * per_head


def test_reshape_constants_follow_the_head_count():
    clean = cleanup.run(encoder_block()).model
    analysis = analyze(clean)
    (g,) = head_groups(analysis)
    pruned = apply_plan(analysis, {g.id: np.array([True, False, True, False])}, clean)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in pruned.graph.initializer}
    shapes = sorted(inits[n.input[1]].tolist() for n in pruned.graph.node if n.op_type == "Reshape")
    assert shapes == [[0, 0, 2, DIM]] * 3 + [[0, 0, 2 * DIM]]


def test_channel_shuffle_reshape_keeps_the_widest_carrier():
    """A Reshape split that does not feed attention MatMuls is not a head split."""
    from oracle import GraphBuilder, check_oracle
    b = GraphBuilder(3)
    t = b.conv("x", 3, 8)
    t = b.op("Reshape", [t, b.const(np.array([0, 2, 4, 6, 6], np.int64))])
    t = b.op("Transpose", [t], perm=[0, 2, 1, 3, 4])
    t = b.op("Reshape", [t, b.const(np.array([0, 8, 6, 6], np.int64))])
    y = b.conv(t, 8, 4)
    model = b.model({"x": ["N", 3, 6, 6]}, [y])
    _, _, analysis = check_oracle(model, seed=1)
    assert not any(head_layout(analysis, g) for g in analysis.groups)


@pytest.mark.parametrize("four_d", [False, True], ids=["3d", "4d"])
@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
def test_attention_op_removes_heads_or_kv_groups(four_d, kv_heads):
    """ONNX Attention (opset 23): a unit is a KV head with its query heads; removing unit 0 equals zeroing the
    output projection's inputs of its query heads, and the head-count attributes follow."""
    clean = cleanup.run(attention_op_block(kv_heads=kv_heads, four_d=four_d)).model
    analysis = analyze(clean)
    (g,) = head_groups(analysis)
    assert g.n_classes == kv_heads and g.prunable == kv_heads
    mask = np.ones(kv_heads, bool)
    mask[0] = False
    query_heads = list(range(HEADS // kv_heads))  # the query heads of KV group 0
    expected_model = zero_heads(clean, {s: query_heads for s in output_projections(analysis, g)})
    pruned = apply_plan(analysis, {g.id: mask}, clean)
    onnx.checker.check_model(pruned, full_check=True)
    for batch, seq in ((2, 5), (1, 9)):
        x = {"x": feed(batch, seq, WIDTH, seed=seq)["x"]}
        np.testing.assert_allclose(run(pruned, x)[0], run(expected_model, x)[0], rtol=1e-4, atol=1e-4)
    attrs = {a.name: a.i for n in pruned.graph.node if n.op_type == "Attention" for a in n.attribute}
    if not four_d:
        assert attrs == {"q_num_heads": HEADS - HEADS // kv_heads, "kv_num_heads": kv_heads - 1}
    shapes = {"x": (2, 5, WIDTH)}
    # K and V lose one head of D features, Q and the output projection the group's query heads, and the
    # Attention op its query heads' scores and weighted sums (S x S x (D + D) each)
    saved = 2 * 5 * WIDTH * (2 * DIM + 2 * len(query_heads) * DIM) + 2 * len(query_heads) * 5 * 5 * 2 * DIM
    assert model_cost(clean, shapes)["macs"] - model_cost(pruned, shapes)["macs"] == saved


@pytest.mark.parametrize("form", ["vit", "swin"])
def test_packed_qkv_heads(form):
    """torchvision's ViT (nn.MultiheadAttention) and Swin (window attention with a relative position bias per
    head) project Q, K and V with one MatMul: a head is still one unit, and removing heads 1 and 2 equals
    zeroing their inputs of the output projection."""
    from attention_blocks import packed_qkv_block
    from oracle import check_oracle
    model = packed_qkv_block(form=form)
    clean = cleanup.run(model).model
    analysis = analyze(clean)
    (g,) = head_groups(analysis)
    assert g.n_classes == HEADS and head_layout(analysis, g) == (HEADS, DIM)
    mask = np.array([True, False, False, True])
    expected_model = zero_heads(clean, {s: [1, 2] for s in output_projections(analysis, g)})
    pruned = apply_plan(analysis, {g.id: mask}, clean)
    onnx.checker.check_model(pruned, full_check=True)
    shape = [d.dim_value for d in clean.graph.input[0].type.tensor_type.shape.dim]
    x = {"x": np.random.default_rng(2).standard_normal(shape).astype(np.float32)}
    np.testing.assert_allclose(run(pruned, x)[0], run(expected_model, x)[0], rtol=1e-4, atol=1e-4)
    assert model_cost(pruned)["macs"] < model_cost(clean)["macs"]
    for seed in range(3):  # random keep-sets of every group against the masked model
        check_oracle(model, seed=seed, keep_prob=0.5)


def test_attention_op_counts_its_own_macs_in_both_forms_and_with_grouped_kv():
    """Q K^T and weights x V for every query head: B * Hq * S * Skv * (D + Dv); GQA shares K and V between
    query heads, so it does not change the count; a past KV cache lengthens Skv."""
    from onnx import helper
    from onnxslim import ops
    from onnxslim.cost import node_costs
    expected = 2 * 4 * 6 * 6 * (8 + 8)
    for four_d, kv_heads in [(False, 4), (False, 2), (True, 4)]:
        costs = node_costs(attention_op_block(four_d=four_d, kv_heads=kv_heads), {"x": (2, 6, 32)})
        assert [c.macs for c in costs if c.op_type == "Attention"] == [expected]
    node = helper.make_node("Attention", ["q", "k", "v", "", "pk", "pv"], ["y"])
    shapes = {"q": (1, 4, 1, 8), "k": (1, 2, 1, 8), "v": (1, 2, 1, 16), "pk": (1, 2, 9, 8)}
    assert ops.node_macs(node, shapes) == 1 * 4 * 1 * 10 * (8 + 16)
    assert ops.node_macs(node, {**shapes, "q": (1, 4, None, 8)}) is None
