"""apply_plan and masked_model work on a copy of the analysis graph: the analysis is the same after them, so
one analysis serves several plans (the oracle's masked and pruned models, the search's candidates)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxslim.channels import analyze
from onnxslim.graph import to_model
from onnxslim.passes import cleanup
from onnxslim.passes.prune.apply import apply_plan, masked_model
from oracle import random_plan, removed, run
from onnxslim.inputs import random_feeds

FAMILIES = Path(__file__).resolve().parent.parent / "models" / "families"


def _state(analysis) -> tuple:
    """Everything apply_plan could touch: the graph as a model, and each node's attributes and inputs."""
    nodes = [(n.name, dict(n.attrs), [id(t) for t in n.inputs]) for n in analysis.graph.nodes]
    return to_model(analysis.graph.copy()).SerializeToString(), nodes


# grouped convs (group attribute), Reshape/Split/Slice shape constants, attention heads: every kind of fix
@pytest.mark.parametrize("name", ["mobilenetv2", "shufflenetv2", "transformer"])
def test_analysis_unchanged_and_reusable(name):
    clean = cleanup.run(onnx.load(FAMILIES / f"{name}.onnx"), cleanup.CleanupConfig()).model
    analysis = analyze(clean)
    before = _state(analysis)
    plan = random_plan(analysis, np.random.default_rng(0))
    assert removed(plan) > 0
    pruned = apply_plan(analysis, plan, clean)
    masked = masked_model(analysis, plan, clean)
    assert _state(analysis) == before
    # the same analysis again gives the same pruned model, which still matches the masked one
    assert apply_plan(analysis, plan, clean).SerializeToString() == pruned.SerializeToString()
    feed = random_feeds(clean, None, count=1, seed=0)[0]
    for e, g in zip(run(masked, feed), run(pruned, feed)):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * max(float(np.abs(e).max()), 1e-3))
    assert sum(t.ByteSize() for t in pruned.graph.initializer) < sum(t.ByteSize() for t in clean.graph.initializer)
