"""--lowrank-in-budget (passes/joint): pruning cuts and low-rank splits in one MACs budget.

The MLP x -> MatMul W1 (+b) -> Relu -> MatMul W2 (+b) -> LayerNorm -> MatMul W3 (+b) has exactly two cheap
moves: half of the hidden units never fire (W1's columns and bias make them negative on every input), so
removing them costs nothing; W3 is of rank 4, so splitting it at rank 8 costs nothing. The budget is set so
that both are needed: the allocation must prune the hidden group and split W3, and the written model must be
the original's function with the MACs the report states.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from oracle import GraphBuilder

from onnxslim.calibration import ArrayDataset
from onnxslim.context import Context
from onnxslim.cost import model_cost
from onnxslim.errors import SlimError
from onnxslim.passes import cleanup
from onnxslim.passes.prune import PruneConfig, run
from onnxslim.progress import silent
from onnxslim.runtime import session

WIDTH, HIDDEN, ROWS = 32, 64, 6
SHAPES = {"x": (1, ROWS, WIDTH)}


def _mlp() -> onnx.ModelProto:
    b = GraphBuilder(3)
    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((WIDTH, HIDDEN)).astype(np.float32) * 0.3
    b1 = np.zeros(HIDDEN, np.float32)
    b1[HIDDEN // 2:] = -100.0  # these units never fire
    w3 = (rng.standard_normal((WIDTH, 4)) @ rng.standard_normal((4, WIDTH))).astype(np.float32) / 4  # rank 4
    h = b.op("Relu", [b.op("Add", [b.op("MatMul", ["x", b.const(w1)]), b.const(b1)])])
    y = b.op("Add", [b.op("MatMul", [h, b.randn(HIDDEN, WIDTH)]), b.randn(WIDTH)])
    y = b.op("LayerNormalization", [y, b.const(np.ones(WIDTH, np.float32)), b.const(np.zeros(WIDTH, np.float32))], axis=-1)
    y = b.op("Add", [b.op("MatMul", [y, b.const(w3)]), b.randn(WIDTH)])
    model = b.model({"x": ["batch", ROWS, WIDTH]}, [y])
    return cleanup.run(model).model


def _calib(n: int = 64) -> ArrayDataset:
    x = np.random.default_rng(0).standard_normal((n, ROWS, WIDTH)).astype(np.float32)
    return ArrayDataset({"x": x}, "random normal rows", None, None)


def _macs() -> int:
    base = ROWS * (WIDTH * HIDDEN + HIDDEN * WIDTH + WIDTH * WIDTH)
    half = ROWS * (WIDTH * HIDDEN // 2) * 2
    return base - half - ROWS * (WIDTH * WIDTH - 8 * 2 * WIDTH)


def _joint(model, **kw):
    target = _macs() / (ROWS * (2 * WIDTH * HIDDEN + WIDTH * WIDTH))
    config = PruneConfig(target_macs=target, lowrank_in_budget=True, round_to=16, **kw)
    return run(model, config, Context(calibration=_calib(), progress=silent, input_shapes=SHAPES))


@pytest.fixture(scope="module")
def joint():
    model = _mlp()
    return model, _joint(model)


def test_one_layer_is_split_and_another_group_pruned(joint):
    model, result = joint
    chosen = result.report["lowrank_in_budget"]
    w3 = [n.name for n in model.graph.node if n.op_type == "MatMul"][-1]
    assert [(s["layer"], s["rank"]) for s in chosen["splits"]] == [(w3, 8)]
    assert [(c["tool"], c["before"], c["after"]) for c in chosen["cut_groups"]] == [("channels", HIDDEN, HIDDEN // 2)]
    assert {t["tool"] for t in result.report["allocation_trace"]} == {"prune", "lowrank"}


def test_written_macs_are_the_reported_ones(joint):
    _, result = joint
    reported = result.report["lowrank_in_budget"]["macs_after"]
    assert reported == _macs()
    assert model_cost(result.model, SHAPES)["macs"] == reported
    assert model_cost(result.extras["unrepaired"], SHAPES)["macs"] == reported


def test_split_layer_is_the_low_rank_product_and_the_model_keeps_its_function(joint):
    model, result = joint
    w3 = [n for n in model.graph.node if n.op_type == "MatMul"][-1]
    original = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == w3.input[1]))
    inits = {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}
    first = next(n for n in result.model.graph.node if n.name == f"{w3.name}/lowrank_0")
    second = next(n for n in result.model.graph.node if n.name == f"{w3.name}/lowrank_1")
    a, b = inits[first.input[1]], inits[second.input[1]]
    assert a.shape == (WIDTH, 8) and b.shape == (8, WIDTH) and second.input[0] == first.output[0]
    np.testing.assert_allclose(a @ b, original, atol=1e-4 * np.abs(original).max())
    x = np.random.default_rng(7).standard_normal((5, ROWS, WIDTH)).astype(np.float32)
    want = session(model).run(None, {"x": x})[0]
    got = session(result.model).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, atol=1e-3 * np.abs(want).max())


def test_without_the_option_the_joint_code_never_runs(monkeypatch):
    import onnxslim.passes.joint as joint_module

    def refuse(*args, **kwargs):
        raise AssertionError("the joint allocation ran without --lowrank-in-budget")
    monkeypatch.setattr(joint_module, "run", refuse)
    model = _mlp()
    config = PruneConfig(target_macs=0.7, round_to=16)
    a = run(model, config, Context(calibration=_calib(), progress=silent, input_shapes=SHAPES))
    assert "lowrank_in_budget" not in a.report


def test_needs_a_macs_target_and_real_data():
    model = _mlp()
    with pytest.raises(SlimError, match="--target-macs"):
        run(model, PruneConfig(target_latency=0.7, lowrank_in_budget=True), Context(calibration=_calib(), progress=silent))
    with pytest.raises(SlimError, match="--calib"):
        run(model, PruneConfig(target_macs=0.7, lowrank_in_budget=True), Context(progress=silent, input_shapes=SHAPES))


def _encoder():
    """One encoder block (tests/attention_blocks.py, width 64, 4 heads, FFN 64) with a rank-4 output projection
    and half of the FFN units dead (bias -100 before the sigmoid-GELU): splitting the projection at rank 8 and
    removing the dead units are the free moves; splitting the projection freezes the block's heads."""
    from attention_blocks import encoder_block
    model = cleanup.run(encoder_block(width=64, heads=4, ffn=64, layers=1, dynamic=True)).model
    inits = {t.name: t for t in model.graph.initializer}
    q, k, v, o, up, down = [n for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]
    rng = np.random.default_rng(1)
    low = (rng.standard_normal((64, 4)) @ rng.standard_normal((4, 64)) / 4).astype(np.float32)
    inits[o.input[1]].CopyFrom(numpy_helper.from_array(low, o.input[1]))
    add = next(n for n in model.graph.node if n.op_type == "Add" and up.output[0] in n.input)
    bias_name = next(i for i in add.input if i in inits)
    bias = numpy_helper.to_array(inits[bias_name]).copy()
    bias[32:] = -100.0
    inits[bias_name].CopyFrom(numpy_helper.from_array(bias.astype(np.float32), bias_name))
    return model, o.name


def test_transformer_block_splits_the_projection_prunes_the_ffn_and_writes_what_it_measured():
    from attention_blocks import feed
    model, projection = _encoder()
    shapes = {"x": (1, 8, 64), "attention_mask": (1, 8)}
    data = {k: np.concatenate([feed(2, 8, 64, seed=s)[k] for s in range(32)]) for k in ("x", "attention_mask")}
    calib = ArrayDataset(data, "random tokens", None, None)
    total = model_cost(model, shapes)["macs"]
    free = 8 * (64 * 32 * 2 + (64 * 64 - 8 * 128))  # per token: 32 FFN units in and out, the projection at rank 8
    result = run(model, PruneConfig(target_macs=(total - free) / total, lowrank_in_budget=True, round_to=8),
                 Context(calibration=calib, progress=silent, input_shapes=shapes))
    chosen = result.report["lowrank_in_budget"]
    assert [(s["layer"], s["rank"]) for s in chosen["splits"]] == [(projection, 8)]
    assert [(c["tool"], c["before"], c["after"]) for c in chosen["cut_groups"]] == [("channels", 64, 32)]
    assert chosen["macs_after"] == total - free == model_cost(result.model, shapes)["macs"]
    # the written model is the one the allocation measured: its loss on the fidelity samples is the reported one
    batches = [b for _, b in zip(range(4), calib.batches(8))]
    names = [o.name for o in model.graph.output]
    want = [dict(zip(names, session(model).run(names, b))) for b in batches]
    got = [dict(zip(names, session(result.model).run(names, b))) for b in batches]
    for w, g in zip(want, got):
        np.testing.assert_allclose(g[names[0]], w[names[0]], atol=1e-3)


def test_the_written_model_has_the_loss_the_allocation_measured():
    """A lossy budget on a random encoder (cuts and splits both taken): the written model's loss on the
    fidelity samples equals the allocation's last measurement of it (the repaired joint state)."""
    from attention_blocks import feed
    from onnxslim.metrics import plan_loss
    model, _ = _encoder()
    shapes = {"x": (1, 8, 64), "attention_mask": (1, 8)}
    data = {k: np.concatenate([feed(2, 8, 64, seed=s)[k] for s in range(32)]) for k in ("x", "attention_mask")}
    calib = ArrayDataset(data, "random tokens", None, None)
    result = run(model, PruneConfig(target_macs=0.55, lowrank_in_budget=True, round_to=8),
                 Context(calibration=calib, progress=silent, input_shapes=shapes))
    chosen = result.report["lowrank_in_budget"]
    assert chosen["splits"] and chosen["cut_groups"]
    assert chosen["macs_after"] == model_cost(result.model, shapes)["macs"] <= 0.55 * model_cost(model, shapes)["macs"]
    batches = [b for _, b in zip(range(4), calib.batches(8))]
    names = [o.name for o in model.graph.output]
    want = [dict(zip(names, session(model).run(names, b))) for b in batches]
    got = [dict(zip(names, session(result.model).run(names, b))) for b in batches]
    fidelity = result.report["fidelity"]
    reported = fidelity.get("after_repair", fidelity["before_repair"])["loss"]
    assert reported > 1e-3 and abs(plan_loss(want, got) - reported) < 1e-5 + 1e-4 * reported
