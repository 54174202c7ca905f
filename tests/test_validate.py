"""validate.py: fidelity metrics on synthetic arrays, sessions, latency, and the comparison report."""
import json
import math
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxslim import metrics, runtime, validate, validation_table
from onnxslim.errors import FIDELITY_FAILED, SlimError


def _mlp(w1=None, w2=None, *, batch="N", out_name="logits", in_name="x"):
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((8, 16)).astype(np.float32) if w1 is None else w1
    w2 = rng.standard_normal((16, 5)).astype(np.float32) if w2 is None else w2
    nodes = [helper.make_node("MatMul", [in_name, "w1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], [out_name], name="fc2")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, [batch, 8])],
                              [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [batch, 5])],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), w1, w2


def _feeds(n_batches=2, batch=3):
    rng = np.random.default_rng(1)
    return [{"x": rng.standard_normal((batch, 8)).astype(np.float32)} for _ in range(n_batches)]


# -- compare_outputs ----------------------------------------------------------------------------------

def test_identical_outputs_are_perfect():
    a = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)
    m = metrics.compare_outputs([{"y": a}], [{"y": a.copy()}])["y"]
    assert m["cosine"] == pytest.approx(1.0)
    assert m["max_abs_error"] == 0 and m["mean_abs_error"] == 0
    assert m["sqnr_db"] == 300.0
    assert m["top1_agreement"] == 1.0
    json.dumps(m, allow_nan=False)


def test_known_perturbation_gives_known_errors():
    ref = np.array([[3.0, 4.0]], np.float32)
    new = np.array([[4.0, 3.0]], np.float32)
    m = metrics.compare_outputs([{"y": ref}], [{"y": new}])["y"]
    assert m["cosine"] == pytest.approx(24 / 25)
    assert m["max_abs_error"] == pytest.approx(1.0)
    assert m["mean_abs_error"] == pytest.approx(1.0)
    assert m["sqnr_db"] == pytest.approx(10 * math.log10(25 / 2))
    assert m["top1_agreement"] == 0.0


def test_cosine_is_per_sample_and_averaged_over_batches():
    # sample 1 identical (cos 1), sample 2 orthogonal (cos 0), sample 3 opposite (cos -1) in a second batch
    ref = [{"y": np.array([[1.0, 0.0], [1.0, 0.0]])}, {"y": np.array([[0.0, 2.0]])}]
    new = [{"y": np.array([[5.0, 0.0], [0.0, 1.0]])}, {"y": np.array([[0.0, -1.0]])}]
    m = metrics.compare_outputs(ref, new)["y"]
    assert m["cosine"] == pytest.approx((1 + 0 - 1) / 3)
    assert m["max_abs_error"] == pytest.approx(4.0)
    assert m["mean_abs_error"] == pytest.approx((4 + 0 + 1 + 1 + 0 + 3) / 6)


def test_cosine_robust_to_zeros():
    zeros, ones = np.zeros((2, 3)), np.ones((2, 3))
    assert metrics.compare_outputs([{"y": zeros}], [{"y": zeros}])["y"]["cosine"] == 1.0
    m = metrics.compare_outputs([{"y": zeros}], [{"y": ones}])["y"]
    assert m["cosine"] == 0.0
    assert m["sqnr_db"] == -300.0
    assert m["kind"] == "scores" and all(math.isfinite(v) for k, v in m.items() if k != "kind")


def test_top1_agreement_fraction():
    ref = np.array([[0.9, 0.1, 0.0], [0.1, 0.8, 0.1], [0.0, 0.2, 0.7], [0.5, 0.4, 0.1]], np.float32)
    new = ref.copy()
    new[3] = [0.4, 0.5, 0.1]  # one of four rows flips its argmax
    m = metrics.compare_outputs([{"p": ref[:2]}, {"p": ref[2:]}], [{"p": new[:2]}, {"p": new[2:]}])["p"]
    assert m["top1_agreement"] == 0.75


def test_top1_only_for_2d_float_outputs():
    three_d = np.ones((2, 3, 4), np.float32)
    ints = np.arange(6).reshape(2, 3)
    out = metrics.compare_outputs([{"a": three_d, "b": ints}], [{"a": three_d, "b": ints}])
    assert "top1_agreement" not in out["a"] and "top1_agreement" not in out["b"]
    assert out["b"]["cosine"] == pytest.approx(1.0)


def test_nan_in_new_output_is_a_mismatch_not_a_pass():
    ref = np.array([[1.0, 2.0], [3.0, 4.0]])
    new = ref.copy()
    new[1, 0] = np.nan
    m = metrics.compare_outputs([{"y": ref}], [{"y": new}])["y"]
    assert m["nonfinite_mismatch"] == 1
    assert m["cosine"] == pytest.approx(0.5)  # the broken sample counts 0
    # the same -inf on both sides (a mask) is agreement
    masked = np.array([[-np.inf, 1.0]])
    same = metrics.compare_outputs([{"y": masked}], [{"y": masked.copy()}])["y"]
    assert same["cosine"] == pytest.approx(1.0) and "nonfinite_mismatch" not in same


def test_shape_mismatch_fails_fidelity():
    with pytest.raises(SlimError, match="shape") as err:
        metrics.compare_outputs([{"y": np.ones((2, 3))}], [{"y": np.ones((2, 4))}])
    assert err.value.exit_code == FIDELITY_FAILED


# -- sessions, runs, latency --------------------------------------------------------------------------

def test_run_matches_numpy():
    model, w1, w2 = _mlp()
    feeds = _feeds()
    outs = runtime.run(model, feeds)
    assert len(outs) == 2
    for feed, out in zip(feeds, outs):
        np.testing.assert_allclose(out["logits"], np.maximum(feed["x"] @ w1, 0) @ w2, rtol=1e-5, atol=1e-5)


def test_external_data_path_gives_same_outputs(tmp_path):
    # the >2 GB route of session(), exercised on a small model
    model, _, _ = _mlp()
    path = runtime.save_external(model, str(tmp_path), min_bytes=256)
    assert (tmp_path / "weights.data").stat().st_size >= (8 * 16 + 16 * 5) * 4
    light = onnx.load(path, load_external_data=False)
    assert all(t.data_location == TensorProto.EXTERNAL for t in light.graph.initializer)
    assert light.ByteSize() < 1000
    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = _feeds()
    for a, b in zip(runtime.run(sess, feeds), runtime.run(model, feeds)):
        np.testing.assert_array_equal(a["logits"], b["logits"])


def test_session_rejects_broken_model_with_one_line():
    model, _, _ = _mlp()
    model.graph.node[0].input[1] = "missing"
    with pytest.raises(SlimError, match="onnxruntime cannot load"):
        runtime.session(model)


def test_bad_feed_is_a_slim_error():
    model, _, _ = _mlp()
    with pytest.raises(SlimError, match="failed to run"):
        runtime.run(model, [{"x": np.ones((2, 7), np.float32)}])


def test_median_latency_respects_budget():
    model, _, _ = _mlp()
    sess = runtime.session(model, threads=1)
    t0 = time.perf_counter()
    seconds = runtime.median_latency(sess, _feeds()[0], runs=10**6, warmup=2, budget_s=0.2)
    assert time.perf_counter() - t0 < 2.0
    assert 0 < seconds < 0.2


def test_paired_latency_alternates_within_budget():
    model, _, _ = _mlp()
    t0 = time.perf_counter()
    a, b, runs, (q25, q75) = runtime.paired_latency(runtime.session(model), runtime.session(model), _feeds()[0],
                                         budget_s=0.2, max_runs=10**6)
    assert time.perf_counter() - t0 < 2.0
    assert a > 0 and b > 0 and runs >= 3 and 0 < q25 <= q75


class _SlowAfterSwitch:
    """A stand-in session: the first `slow_runs` runs after the other one ran take 20 ms (as when the other
    session's onnxruntime threads still spin on the cores), the rest `seconds`."""
    last = [None]

    def __init__(self, seconds, slow_runs=2):
        self.seconds, self.slow_runs, self.since = seconds, slow_runs, 0

    def run(self, outputs, feed):
        if self.last[0] is not self:
            self.last[0], self.since = self, 0
        self.since += 1
        time.sleep(0.02 if self.since <= self.slow_runs else self.seconds)


def test_paired_latency_does_not_time_the_first_runs_of_a_block():
    a, b = _SlowAfterSwitch(0.004), _SlowAfterSwitch(0.002)
    before, after, runs, (q25, q75) = runtime.paired_latency(a, b, {}, budget_s=0.6, block_s=0.001, skip=2)
    assert before < 0.01 and after < 0.006  # the 20 ms runs after each switch are not in the medians
    assert 0.3 < after / before < 0.8 and 0.3 < q25 <= q75 < 0.8


# -- compare_models and the table ---------------------------------------------------------------------

def test_compare_model_with_itself():
    model, _, _ = _mlp()
    report = validate.compare_models(model, model, _feeds(), latency_budget_s=0.2)
    # MACs at batch 1 although the feeds hold batches of 3
    assert report["macs"] == {"before": 8 * 16 + 16 * 5, "after": 8 * 16 + 16 * 5, "ratio": 1.0}
    assert report["params"]["before"] == 8 * 16 + 16 * 5
    assert report["size_bytes"]["ratio"] == 1.0
    out = report["outputs"]["logits"]
    assert out["cosine"] == pytest.approx(1.0) and out["max_abs_error"] == 0.0 and out["top1_agreement"] == 1.0
    assert report["latency_ms"]["before"] > 0 and report["latency_ms"]["after"] > 0
    assert report["latency_ms"]["ratio"] == pytest.approx(report["latency_ms"]["after"] / report["latency_ms"]["before"])
    low, high = report["latency_ms"]["ratio_iqr"]
    assert 0 < low <= high
    json.dumps(report, allow_nan=False)


def test_compare_models_sees_a_pruned_hidden_layer():
    model, w1, w2 = _mlp()
    small, _, _ = _mlp(w1[:, :8].copy(), w2[:8].copy())
    report = validate.compare_models(model, small, _feeds(), latency=False)
    assert "latency_ms" not in report
    assert report["macs"]["after"] == 8 * 8 + 8 * 5
    assert report["macs"]["ratio"] == pytest.approx((8 * 8 + 8 * 5) / (8 * 16 + 16 * 5))
    assert report["params"]["after"] == 8 * 8 + 8 * 5
    assert report["size_bytes"]["after"] < report["size_bytes"]["before"]
    assert report["outputs"]["logits"]["cosine"] < 0.999
    assert report["outputs"]["logits"]["max_abs_error"] > 0


@pytest.mark.parametrize("change", ["output", "input"])
def test_compare_models_requires_same_io_names(change):
    model, _, _ = _mlp()
    other, _, _ = _mlp(out_name="scores") if change == "output" else _mlp(in_name="image")
    with pytest.raises(SlimError, match=f"{change}s"):
        validate.compare_models(model, other, _feeds(), latency=False)


def test_format_report_table_shows_the_numbers():
    report = {
        "macs": {"before": 385_187_552, "after": 192_593_776, "ratio": 0.5},
        "params": {"before": 4_631_083, "after": 2_000_000, "ratio": 0.432},
        "size_bytes": {"before": 18_614_607, "after": 9_307_303, "ratio": 0.5},
        "latency_ms": {"before": 12.5, "after": 8.25, "ratio": 0.66, "ratio_iqr": [0.64, 0.68], "runs": 40},
        "outputs": {"logits": {"cosine": 0.998765, "max_abs_error": 0.0123, "mean_abs_error": 0.001,
                               "sqnr_db": 25.0, "top1_agreement": 0.97}},
    }
    table = validation_table.format_report_table(report)
    for text in ("385M", "193M", "4.63M", "2M", "17.8 MB", "8.88 MB", "12.5 ms", "8.25 ms", "0.660", "0.500",
                 "logits", "0.998765", "0.0123", "97.0%", "0.640-0.680"):
        assert text in table, text
    assert len(table.splitlines()) == 6
    assert "unstable" not in table
    report["latency_ms"]["ratio_iqr"] = [0.5, 1.8]
    assert "timing unstable on this machine: try --threads 1" in validation_table.format_report_table(report)


def test_format_report_table_prints_only_what_is_there():
    table = validation_table.format_report_table({"macs": {"before": 1000, "after": 500, "ratio": 0.5},
                                          "accuracy": {"before": 0.89, "after": 0.88, "ratio": 0.989},
                                          "quantize": {"nodes": 12}, "outputs": {"y": {"cosine": 1.0}}})
    lines = table.splitlines()
    assert any(line.startswith("MACs") and "1K" in line and "500" in line for line in lines)
    assert any(line.startswith("accuracy") and "0.89" in line and "0.88" in line for line in lines)
    assert not any("latency" in line or "size" in line or "quantize" in line for line in lines)
    assert lines[-1] == "output y:  cosine 1.000000"
    assert validation_table.format_report_table({}) == ""
