"""The rules on ONNX's backend node cases (generated from the installed onnx package, nothing committed):
wherever a rule fires on a case that onnxruntime runs, the rewritten model gives the original's outputs.
CI takes every 6th case; ONNXSLIM_FULL_CORPUS=1 takes all (about a minute on 2 cores)."""
import os

import numpy as np
import onnxruntime as ort
import pytest
from onnx.backend.test.case.node import collect_testcases

from onnxslim.graph import infer_shapes, to_graph, to_model
from onnxslim.passes.rewrite import apply_rules

STEP = 1 if os.environ.get("ONNXSLIM_FULL_CORPUS") else 6


def _run(m, feeds):
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def _same(a, b):
    if not isinstance(a, np.ndarray):
        return True  # sequences/optionals: compared by the cases that produce tensors
    if a.dtype.kind in "fc":
        return a.shape == b.shape and np.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True)
    return np.array_equal(a, b)


@pytest.mark.slow
def test_rules_keep_node_case_outputs():
    ort.set_default_logger_severity(3)
    cases = collect_testcases(None)[::STEP]
    fired, wrong = 0, []
    for case in cases:
        g = to_graph(infer_shapes(case.model))
        counts = apply_rules(g)
        if not counts or not case.data_sets:
            continue
        inputs, _ = case.data_sets[0]
        feeds = {vi.name: (np.asarray(x) if isinstance(x, np.generic) else x) for vi, x in zip(case.model.graph.input, inputs)}
        try:
            want = _run(case.model, feeds)
        except Exception:
            continue  # onnxruntime cannot run the original
        fired += 1
        got = _run(to_model(g, like=case.model), feeds)
        if not all(_same(a, b) for a, b in zip(got, want)):
            wrong.append((case.name, counts))
    assert fired >= len(cases) // 12, fired  # the sample exercises the rules
    assert not wrong, wrong
