"""Sensitivity statistics recollected only where a step changed them (passes/prune/stats_cache.py, issue 11
run time): the same numbers as collecting every exit from scratch (repair.collect), and so the same model."""
from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest

from onnxslim.calibration import ArrayDataset, load_calibration
from onnxslim.context import Context
from onnxslim.passes import cleanup
from onnxslim.passes.prune import PruneConfig, run
from onnxslim.passes.prune import calibrated as calibrated_module
from onnxslim.passes.prune.evaluate import State, parametric_model
from onnxslim.passes.prune.repair import collect
from onnxslim.passes.prune.stats_cache import StepStats
from onnxslim.progress import silent

from attention_blocks import encoder_block, feed
from test_prune_suffix import MODELS, digits  # noqa: F401 (the digits ResNet fixture: model, exits, 24 samples)


def _scaled(state: State, exits, rng) -> State:
    """`state` with the weights of one exit changed."""
    e = exits[int(rng.integers(len(exits)))]
    return state.with_changes({e.node: (state.w2[e.node] * rng.uniform(0.5, 1.5, e.w2.shape), state.bias[e.node] + 0.1)})


class _FromScratch(StepStats):
    """Every step's statistics collected from scratch (repair.collect): what the cache must equal."""
    def stats(self, state, progress=None):
        return collect(self.original_model, self.current_model, self.exits, state, self.batches,
                       per_sample=self.per_sample, seed=self.seed, residual=bool(self.skips), progress=progress)


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for node in a:
        np.testing.assert_array_equal(a[node].gram, b[node].gram)
        np.testing.assert_array_equal(a[node].cross, b[node].cross)
        assert a[node].y_sq == b[node].y_sq and a[node].count == b[node].count


# targets and tensors kept; none kept (the original model and the whole current model run each time)
@pytest.mark.parametrize("cap", [2**40, 0])
def test_step_stats_equal_collect_from_scratch(digits, cap, monkeypatch):
    model, exits, batches = digits
    batches = batches[:2] + [{k: v[:4] for k, v in batches[2].items()}]  # a short last batch
    assert any(e.residual is not None for e in exits)
    current = parametric_model(model, exits)
    cache = StepStats(model, current, exits, batches, per_sample=16, seed=3, residual=True, cap_bytes=cap, tap_bytes=cap)
    sliced = []
    real_suffix = StepStats._suffix
    monkeypatch.setattr(StepStats, "_suffix", lambda self, *a: sliced.append(real_suffix(self, *a)) or sliced[-1])
    rng = np.random.default_rng(0)
    state = State(exits)
    reused = 0
    for _ in range(5):
        got = cache.stats(state)
        want = collect(model, current, exits, state, batches, per_sample=16, seed=3, residual=True)
        _assert_same(got, want)
        before = dict(got)
        state = _scaled(state, exits, rng)
        after = cache.stats(state)
        reused += sum(after[n] is before[n] for n in after)
    assert reused > 0  # some exits read only tensors before the changed one
    assert any(p is not None for p in sliced) == bool(cap)  # the network after the changed exit only


def test_sensitivity_and_repair_unchanged_by_the_cache(digits, monkeypatch):
    """A sensitivity + repair run with the cache and with every step collected from scratch: the same model."""
    model = cleanup.run(onnx.load(str(MODELS / "digits_resnet_folded.onnx"))).model
    calib = load_calibration(MODELS / "digits_calib.npz", model, size=32)
    config = PruneConfig(target_macs=0.6, importance="l1", round_to=4, sensitivity_step=0.05, repair_passes=2)
    cached = run(model, config, Context(calibration=calib, progress=silent))

    monkeypatch.setattr(calibrated_module, "StepStats", _FromScratch)
    scratch = run(model, config, Context(calibration=calib, progress=silent))
    assert cached.report["allocation_trace"] == scratch.report["allocation_trace"]
    assert cached.model.SerializeToString() == scratch.model.SerializeToString()
    for a, b in itertools.zip_longest(cached.model.graph.initializer, scratch.model.graph.initializer):
        np.testing.assert_array_equal(onnx.numpy_helper.to_array(a), onnx.numpy_helper.to_array(b))


def test_prefix_sessions_give_the_whole_models_tensors(digits):
    """A repair wave's tapped tensors from the network up to them only: bit for bit the whole model's."""
    from onnxslim.passes.prune.prefix import prefix_model, prefix_session
    from onnxslim.runtime import tapped_session
    model, exits, batches = digits
    current = parametric_model(model, exits)
    state = _scaled(State(exits), exits, np.random.default_rng(1))
    for chunk in (exits[:2], exits[2:4], exits[-2:]):
        for m, names, feed in ((current, [e.input for e in chunk], {**batches[0], **state.feeds()}),
                               (model, [e.output for e in chunk], batches[0])):
            part = prefix_model(m, names)
            assert part is None or len(part.graph.node) < len(m.graph.node)
            whole, whole_names = tapped_session(m, names)
            want = dict(zip(whole_names, whole.run(whole_names, {k: v for k, v in feed.items() if k in {i.name for i in m.graph.input}})))
            sess, got_names = prefix_session(m, names)
            got = dict(zip(names, sess.run(names, feed)))
            for name in names:
                np.testing.assert_array_equal(got[name], want[name])
    assert prefix_model(model, [exits[0].input]) is not None


def test_step_stats_equal_collect_on_matmul_exits():
    """MatMul exits (sampled token rows, the residual target over a bias Add): the same numbers too."""
    from onnxslim.channels import analyze_graph
    from onnxslim.graph import infer_shapes, to_graph
    from onnxslim.passes.prune.exits import find_exits
    from test_repair import transformer_residual_toy
    model = transformer_residual_toy(seq=7)
    analysis = analyze_graph(to_graph(infer_shapes(model)))
    exits = find_exits(analysis, analysis.prunable_groups)[0]
    assert {e.op for e in exits} == {"matmul"} and any(e.residual for e in exits)
    rng = np.random.default_rng(5)
    batches = [{"x": rng.standard_normal((n, 7, 8)).astype(np.float32)} for n in (6, 6, 3)]
    current = parametric_model(model, exits)
    cache = StepStats(model, current, exits, batches, per_sample=4, seed=1, residual=True)
    state = State(exits)
    for _ in range(4):
        _assert_same(cache.stats(state), collect(model, current, exits, state, batches, per_sample=4, seed=1, residual=True))
        state = _scaled(state, exits, rng)


def test_an_exit_reading_a_graph_input_in_a_sensitivity_run(monkeypatch):
    """A transformer whose first projections (and their residual skip) read the graph input itself: the
    default sensitivity prune runs (it raised KeyError on the input's name) and gives the plan and, to float
    rounding, the weights that collecting every step from scratch gives."""
    model = cleanup.run(encoder_block(width=32, heads=4, ffn=96, layers=2, batch=8, seq=6)).model
    batches = [feed(8, 6, 32, seed=s) for s in range(4)]
    calib = ArrayDataset({k: np.concatenate([b[k] for b in batches]) for k in batches[0]}, source="test")
    config = PruneConfig(target_macs=0.6, round_to=8)
    cached = run(model, config, Context(calibration=calib, progress=silent))
    assert cached.report["estimated_macs_fraction"] <= 0.6

    monkeypatch.setattr(calibrated_module, "StepStats", _FromScratch)
    scratch = run(model, config, Context(calibration=calib, progress=silent))
    assert cached.report["allocation_trace"] == scratch.report["allocation_trace"]
    # the same plan; the repaired weights to float rounding (on this graph onnxruntime fuses the repair
    # waves' network prefixes differently from the whole model: 1e-6 relative)
    for a, b in itertools.zip_longest(cached.model.graph.initializer, scratch.model.graph.initializer):
        assert a.name == b.name
        x, y = onnx.numpy_helper.to_array(a), onnx.numpy_helper.to_array(b)
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5 * float(np.abs(y).max(initial=1.0)))
