"""Least-squares repair: exact recovery on linear toys (1x1 and im2col 3x3), the repaired digits model
beats the unrepaired one, and the written model computes what the evaluator measured."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxslim.calibration import load_calibration
from onnxslim.channels import analyze_graph
from onnxslim.context import Context
from onnxslim.graph import infer_shapes, to_graph
from onnxslim.passes import cleanup
from onnxslim.passes.prune import PruneConfig, run
from onnxslim.metrics import plan_loss as output_loss
from onnxslim.passes.prune.evaluate import Evaluator, parametric_model
from onnxslim.passes.prune.exits import find_exits
from onnxslim.passes.prune.plan_state import plan_state
from onnxslim.passes.prune.repair import collect, solve
from onnxslim.progress import silent
from onnxslim.runtime import session

MODELS = Path(__file__).resolve().parent.parent / "models"


def two_conv_model(k: int, c_in=8, c_mid=6, c_out=5, hw=7, seed=0) -> onnx.ModelProto:
    """x -> Conv1x1 (c_in -> c_mid) -> Conv kxk (c_mid -> c_out, same padding) -> y; no nonlinearity, so the
    second conv's input is known exactly."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((c_mid, c_in, 1, 1)).astype(np.float32)
    b1 = rng.standard_normal(c_mid).astype(np.float32)
    w2 = rng.standard_normal((c_out, c_mid, k, k)).astype(np.float32)
    b2 = rng.standard_normal(c_out).astype(np.float32)
    p = k // 2
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], name="conv1"),
             helper.make_node("Conv", ["h", "w2", "b2"], ["y"], name="conv2", pads=[p, p, p, p], kernel_shape=[k, k])]
    graph = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", c_in, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", c_out, hw, hw])],
                              [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("k", [1, 3])
def test_least_squares_recovers_exact_weights(k):
    """Targets come from the model itself: refitting conv2 from scratch-like priors (zeros) on its own input
    and output statistics must give back its weights and bias (ordinary least squares, ridge 0)."""
    model = two_conv_model(k)
    analysis = analyze_graph(to_graph(infer_shapes(model)))
    exits, skipped = find_exits(analysis, analysis.prunable_groups)
    conv2 = next(e for e in exits if e.node == "conv2")
    rng = np.random.default_rng(1)
    batches = [{"x": rng.standard_normal((4, 8, 7, 7)).astype(np.float32)} for _ in range(3)]
    stats = collect(model, None, [conv2], None, batches, per_sample=1000)
    w2, bias = solve(conv2, stats["conv2"], np.arange(conv2.n_features), ridge=0.0,
                     prior_w2=np.zeros_like(conv2.w2), prior_bias=np.zeros(conv2.w2.shape[0]), prior_rows=0.0)
    np.testing.assert_allclose(w2, conv2.w2, atol=1e-3)
    np.testing.assert_allclose(bias, conv2.bias, atol=1e-3)
    assert stats["conv2"].relative_error(w2, bias) < 1e-8


def test_solve_on_a_subset_is_the_restricted_least_squares():
    """With features removed, the refit equals numpy's least squares on the kept columns."""
    rng = np.random.default_rng(2)
    model = two_conv_model(1)
    analysis = analyze_graph(to_graph(infer_shapes(model)))
    conv2 = next(e for e in find_exits(analysis, analysis.prunable_groups)[0] if e.node == "conv2")
    batches = [{"x": rng.standard_normal((8, 8, 7, 7)).astype(np.float32)}]
    stats = collect(model, None, [conv2], None, batches, per_sample=1000)
    keep = np.array([0, 2, 5])
    w2, bias = solve(conv2, stats["conv2"], keep, ridge=0.0, prior_rows=0.0)
    tap = session(model)
    # rows of the kept inputs and the original outputs, straight from numpy
    x = batches[0]["x"]
    w1 = numpy_helper.to_array(model.graph.initializer[0]).reshape(6, 8)
    b1 = numpy_helper.to_array(model.graph.initializer[1])
    h = np.einsum("oc,nchw->nhwo", w1, x) + b1
    y = tap.run(None, batches[0])[0].transpose(0, 2, 3, 1).reshape(-1, 5)
    design = np.concatenate([h.reshape(-1, 6)[:, keep], np.ones((h.size // 6, 1))], axis=1).astype(np.float64)
    expected = np.linalg.lstsq(design, y.astype(np.float64), rcond=None)[0]
    np.testing.assert_allclose(w2[:, keep], expected[:-1].T, atol=2e-3)
    np.testing.assert_allclose(bias, expected[-1], atol=2e-3)
    assert np.all(w2[:, [1, 3, 4]] == 0)


@pytest.fixture(scope="module")
def digits():
    model = cleanup.run(onnx.load(str(MODELS / "digits_resnet_folded.onnx"))).model
    calib = load_calibration(MODELS / "digits_calib.npz", model)
    ev = np.load(MODELS / "digits_eval.npz")
    return model, calib, ev


def _accuracy(model, ev) -> float:
    logits = session(model).run(None, {"input": ev["input"]})[0]
    return float((logits.argmax(1) == ev["labels"]).mean())


@pytest.mark.slow
@pytest.mark.parametrize("importance", ["l1", "reconstruction"])
def test_repair_improves_calibration_fidelity_on_digits(digits, importance):
    model, calib, ev = digits
    config = PruneConfig(target_macs=0.5, importance=importance, allocation="global", round_to=4)
    plain = run(model, PruneConfig(**{**config.__dict__, "repair": False}), Context(calibration=calib, progress=silent))
    fixed = run(model, config, Context(calibration=calib, progress=silent))  # repair defaults on with real data
    assert fixed.report["repair"] is True and plain.report["repair"] is False
    fidelity = fixed.report["fidelity"]
    assert fidelity["after_repair"]["loss"] < fidelity["before_repair"]["loss"]
    assert fidelity["after_repair"]["logits"]["cosine"] > fidelity["before_repair"]["logits"]["cosine"]
    assert _accuracy(fixed.model, ev) > _accuracy(plain.model, ev)
    # same plan either way: repair changes weights, not widths
    assert [g["after"] for g in fixed.report["pruned_groups"]] == [g["after"] for g in plain.report["pruned_groups"]]


@pytest.mark.slow
def test_written_model_computes_what_the_evaluator_measured(digits):
    """The repaired weights written into the pruned graph give the loss the report measured on the
    fidelity subset (the parametric, masked evaluation and the sliced model agree)."""
    model, calib, ev = digits
    config = PruneConfig(target_macs=0.5, importance="l1", round_to=4, fidelity_samples=32, calib_batch=8)
    result = run(model, config, Context(calibration=calib, progress=silent))
    batches = list(calib.batches(8))[:4]
    ref = [{"logits": session(model).run(None, b)[0]} for b in batches]
    new = [{"logits": session(result.model).run(None, b)[0]} for b in batches]
    measured = result.report["fidelity"]["after_repair"]["loss"]
    assert abs(output_loss(ref, new) - measured) <= 1e-3 * max(measured, 1e-3) + 1e-5
    onnx.checker.check_model(result.model)
    out = session(result.model).run(None, {"input": ev["input"][:5]})[0]
    assert out.shape == (5, 10)


def test_random_calibration_turns_repair_off(digits):
    model, _, _ = digits
    result = run(model, PruneConfig(target_macs=0.6, importance="activation", round_to=4, repair=True), Context(progress=silent))
    assert result.report["repair"] is False
    assert any("real calibration data" in n for n in result.report["notes"])
    assert result.report["calibration"]["real"] is False
    assert "after_repair" not in result.report["fidelity"]


def residual_toy(seed=0) -> onnx.ModelProto:
    """x -> conv1 -> h -> conv2 -> s;  s -> conv3 -> Relu -> r -> conv4 -> t;  y = t + s, 1x1 convs: pruning h
    makes the skip s drift, and conv4 (the branch exit) can only compensate that with the residual target.
    (Without the Relu the drift left after conv2's refit is orthogonal to every linear feature of h, so no
    branch could undo any of it.)"""
    rng = np.random.default_rng(seed)
    shapes = {"w1": (6, 8), "w2": (8, 6), "w3": (6, 8), "w4": (8, 6)}
    inits = [numpy_helper.from_array(rng.standard_normal((*s, 1, 1)).astype(np.float32), n) for n, s in shapes.items()]
    inits += [numpy_helper.from_array(rng.standard_normal(s[0]).astype(np.float32), "b" + n[1]) for n, s in shapes.items()]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], name="conv1"),
             helper.make_node("Conv", ["h", "w2", "b2"], ["s"], name="conv2"),
             helper.make_node("Conv", ["s", "w3", "b3"], ["r0"], name="conv3"),
             helper.make_node("Relu", ["r0"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w4", "b4"], ["t"], name="conv4"),
             helper.make_node("Add", ["t", "s"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8, 5, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _refit_alone(model, current, exit, state, batches, keep, residual: bool):
    """`state` with only `exit` refit (no ridge), from statistics with or without the residual target."""
    stats = collect(model, current, [exit], state, batches, per_sample=1000, residual=residual, together={exit.node})
    trial = state.copy()
    trial.w2[exit.node], trial.bias[exit.node] = solve(exit, stats[exit.node], keep, ridge=0.0, prior_rows=0.0)
    return trial


def test_residual_target_restores_the_sum():
    """conv2 left masked (pruned, not refit): the skip s drifts. conv4 refit to original(y) - current(s) gives
    a lower output error than conv4 refit to its own original output t; and that residual refit is the least
    squares optimum of the output error itself, so a step away from it in any direction only raises it."""
    model = residual_toy()
    analysis = analyze_graph(to_graph(infer_shapes(model)))
    exits = {e.node: e for e in find_exits(analysis, analysis.prunable_groups)[0]}
    assert exits["conv4"].residual == ("y", "s") and exits["conv4"].skip_upstream == {"conv2"}
    assert exits["conv2"].residual is None  # s also feeds conv3: not a pure residual branch
    h_group, r_group = exits["conv2"].group, exits["conv4"].group
    plan = {h_group.id: np.array([True, False, True, False, True, False]), r_group.id: np.array([True] * 4 + [False] * 2)}
    state = plan_state(list(exits.values()), plan)  # masked, no refit
    rng = np.random.default_rng(3)
    batches = [{"x": rng.standard_normal((16, 8, 5, 5)).astype(np.float32)} for _ in range(4)]
    current = parametric_model(model, list(exits.values()))
    evaluator = Evaluator(model, list(exits.values()), batches)
    conv4 = exits["conv4"]
    keep = conv4.features_of(plan[r_group.id])
    losses = {}
    for residual in (False, True):
        trial = _refit_alone(model, current, conv4, state, batches, keep, residual)
        losses[residual] = evaluator.loss(trial)
        if residual:
            for _ in range(3):
                nudged = trial.copy()
                nudged.w2["conv4"][:, keep] += 1e-2 * rng.standard_normal((8, len(keep)))
                assert evaluator.loss(nudged) > losses[True]
    assert losses[True] < losses[False]
    # refit together with conv2 (the skip's producer), the residual target is not used: same as the plain one
    both = collect(model, current, [conv4], state, batches, per_sample=1000, residual=True, together={"conv2", "conv4"})
    plain = collect(model, current, [conv4], state, batches, per_sample=1000, residual=False)
    np.testing.assert_allclose(both["conv4"].cross, plain["conv4"].cross)


def transformer_residual_toy(seed=0, seq=5) -> onnx.ModelProto:
    """The residual_toy as transformers are exported: x [n,5,8] -> MatMul+Add(bias) -> h -> MatMul+Add -> s;
    s -> MatMul+Add -> Relu -> r -> MatMul (mm4) -> Add(b4) -> t;  y = t + s. mm4's residual target must
    step over its bias Add."""
    rng = np.random.default_rng(seed)
    shapes = {"w1": (8, 6), "w2": (6, 8), "w3": (8, 6), "w4": (6, 8)}
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n) for n, s in shapes.items()]
    inits += [numpy_helper.from_array(rng.standard_normal(s[1]).astype(np.float32), "b" + n[1]) for n, s in shapes.items()]
    nodes = []
    for i, (src, dst) in enumerate((("x", "h"), ("h", "s"), ("s", "r0"), ("r", "t")), 1):
        nodes += [helper.make_node("MatMul", [src, f"w{i}"], [f"m{i}"], name=f"mm{i}"),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [dst], name=f"bias{i}")]
        if i == 3:
            nodes.append(helper.make_node("Relu", ["r0"], ["r"], name="relu"))
    nodes.append(helper.make_node("Add", ["t", "s"], ["y"], name="add"))
    graph = helper.make_graph(nodes, "residual_mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", seq, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", seq, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_residual_target_steps_over_a_bias_add():
    model = transformer_residual_toy()
    analysis = analyze_graph(to_graph(infer_shapes(model)))
    exits = {e.node: e for e in find_exits(analysis, analysis.prunable_groups)[0]}
    mm4 = exits["mm4"]
    assert mm4.residual == ("y", "s") and mm4.skip_upstream == {"mm2"}
    # the bias Add belongs to the exit: its constant is the intercept the repair fits (bias compensation)
    assert mm4.bias_add == ("bias4", 1) and mm4.residual_offset is None and mm4.output == "t"
    np.testing.assert_allclose(mm4.bias, numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "b4")))
    assert exits["mm2"].residual is None  # s also feeds mm3
    h_group, r_group = exits["mm2"].group, mm4.group
    plan = {h_group.id: np.array([True, False, True, False, True, False]), r_group.id: np.array([True] * 4 + [False] * 2)}
    state = plan_state(list(exits.values()), plan)
    rng = np.random.default_rng(3)
    batches = [{"x": rng.standard_normal((16, 5, 8)).astype(np.float32)} for _ in range(4)]
    current = parametric_model(model, list(exits.values()))
    evaluator = Evaluator(model, list(exits.values()), batches)
    keep = mm4.features_of(plan[r_group.id])
    losses = {}
    for residual in (False, True):
        trial = _refit_alone(model, current, mm4, state, batches, keep, residual)
        losses[residual] = evaluator.loss(trial)
        if residual:  # the least-squares optimum of the block's output error itself, the bias refit with it
            w, b = _direct_fit(model, current, state, batches, keep)
            np.testing.assert_allclose(trial.w2["mm4"][:, keep], w, rtol=1e-3, atol=1e-4)
            np.testing.assert_allclose(trial.bias["mm4"], b, rtol=1e-3, atol=1e-4)
    assert losses[True] < losses[False]


def _direct_fit(model, current, state, batches, keep):
    """argmin_(W, b) sum ||y_orig - (s + W r_keep + b)||^2 over every row, from the activations themselves."""
    from onnxslim.runtime import tapped_session
    sess, names = tapped_session(current, ["r", "s"])
    orig, _ = tapped_session(model, ["y"])
    xs, ys = [], []
    for feed in batches:
        got = dict(zip(names, sess.run(names, {**feed, **state.feeds()})))
        y = orig.run(["y"], feed)[0]
        r = got["r"].reshape(-1, got["r"].shape[-1])[:, keep]
        xs.append(np.concatenate([r, np.ones((len(r), 1), r.dtype)], axis=1))
        ys.append((y - got["s"]).reshape(-1, y.shape[-1]))
    w, *_ = np.linalg.lstsq(np.concatenate(xs).astype(np.float64), np.concatenate(ys).astype(np.float64), rcond=None)
    return w[:-1].T, w[-1]


def test_residual_found_with_a_symbolic_sequence_length():
    """Exported transformers have dynamic batch and sequence dims; shape inference may name them
    differently on the two inputs of the residual Add."""
    analysis = analyze_graph(to_graph(infer_shapes(transformer_residual_toy(seq="sequence"))))
    exits = {e.node: e for e in find_exits(analysis, analysis.prunable_groups)[0]}
    assert exits["mm4"].residual == ("y", "s")
