"""The default importance with real calibration data and a target (issue 11): plans from l1 and
reconstruction, compared on calibration samples neither was fitted on; the better one is kept and said."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxslim.calibration import load_calibration
from onnxslim.context import Context
from onnxslim.passes import cleanup
from onnxslim.passes.prune import PruneConfig, run
from onnxslim.passes.prune.choose import CANDIDATES, _outputs, describe
from onnxslim.passes.prune.evaluate import output_loss
from onnxslim.progress import silent

MODELS = Path(__file__).resolve().parent.parent / "models"
FAST = dict(round_to=4, sensitivity_step=0.1, fidelity_samples=8, repair_passes=1)


@pytest.fixture(scope="module")
def digits():
    model = cleanup.run(onnx.load(str(MODELS / "digits_resnet_folded.onnx"))).model
    return model, load_calibration(MODELS / "digits_calib.npz", model, size=32)


@pytest.fixture(scope="module")
def chosen(digits):
    model, calib = digits
    return run(model, PruneConfig(target_macs=0.7, **FAST), Context(calibration=calib, progress=silent))


def test_default_builds_both_plans_and_keeps_the_lower_held_out_loss(digits, chosen):
    model, calib = digits
    choice = chosen.report["importance_choice"]
    assert set(choice["candidates"]) == set(CANDIDATES)
    assert choice["fit_samples"] == 24 and choice["held_out_samples"] == 8
    losses = {c: v["held_out_loss"] for c, v in choice["candidates"].items()}
    assert chosen.report["importance"] == choice["chosen"] == min(losses, key=losses.get)
    assert choice["margin"] == pytest.approx(max(losses.values()) - min(losses.values()), abs=1e-6)
    # the loss is the kept model's own, on the last 8 samples
    held = list(calib.take(24).batches(8))
    assert output_loss(_outputs(model, held), _outputs(chosen.model, held)) == pytest.approx(losses[choice["chosen"]], rel=1e-4, abs=1e-6)
    assert choice["chosen"] in describe(choice) and "8 calibration samples" in describe(choice)


def test_the_kept_plan_is_the_one_its_criterion_builds_on_the_fitting_samples(digits, chosen):
    model, calib = digits
    crit = chosen.report["importance_choice"]["chosen"]
    alone = run(model, PruneConfig(target_macs=0.7, importance=crit, **FAST), Context(calibration=calib.take(0, 24), progress=silent))
    x = np.load(MODELS / "digits_eval.npz")["input"][:32]
    a, b = _outputs(chosen.model, [{"input": x}]), _outputs(alone.model, [{"input": x}])
    np.testing.assert_allclose(a[0]["logits"], b[0]["logits"], rtol=1e-5, atol=1e-5)


def test_a_given_importance_or_no_real_data_means_no_choice(digits):
    model, calib = digits
    given = run(model, PruneConfig(target_macs=0.7, importance="l1", **FAST), Context(calibration=calib, progress=silent))
    assert "importance_choice" not in given.report and given.report["importance"] == "l1"
    random = run(model, PruneConfig(target_macs=0.7, round_to=4), Context(progress=silent))
    assert "importance_choice" not in random.report and random.report["importance"] == "l1"
