"""--importance auto with real calibration data and a target (issue 11): plans from l1 and reconstruction,
compared on calibration samples neither was fitted on; the better criterion is rebuilt on all samples and said.
The default stays l1 (auto's first version measured worse than both criteria, benchmarks/RESULTS.md)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxslim.calibration import load_calibration
from onnxslim.context import Context
from onnxslim.errors import SlimError
from onnxslim.passes import cleanup
from onnxslim.passes.prune import PruneConfig, run
from onnxslim.passes.prune.choose import CANDIDATES, describe
from onnxslim.metrics import plan_loss as output_loss
from onnxslim.runtime import run as _outputs
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
    return run(model, PruneConfig(target_macs=0.7, importance="auto", **FAST), Context(calibration=calib, progress=silent))


@pytest.mark.slow
def test_auto_builds_both_plans_and_keeps_the_lower_held_out_loss(digits, chosen):
    model, calib = digits
    choice = chosen.report["importance_choice"]
    assert set(choice["candidates"]) == set(CANDIDATES)
    assert choice["fit_samples"] == 24 and choice["held_out_samples"] == 8
    losses = {c: v["held_out_loss"] for c, v in choice["candidates"].items()}
    assert chosen.report["importance"] == choice["chosen"] == min(losses, key=losses.get)
    assert choice["margin"] == pytest.approx(max(losses.values()) - min(losses.values()), abs=1e-6)
    # the loss is that of the criterion's plan fitted on the first 24 samples, measured on the last 8
    crit = choice["chosen"]
    fitted = run(model, PruneConfig(target_macs=0.7, importance=crit, **FAST), Context(calibration=calib.take(0, 24), progress=silent))
    held = list(calib.take(24).batches(8))
    assert output_loss(_outputs(model, held), _outputs(fitted.model, held)) == pytest.approx(losses[crit], rel=1e-4, abs=1e-6)
    assert choice["rebuilt_on_samples"] == 32
    line = describe(choice)
    assert crit in line and "8 calibration samples" in line and "rebuilt on all 32" in line


@pytest.mark.slow
def test_the_kept_plan_is_the_one_its_criterion_builds_on_all_samples(digits, chosen):
    model, calib = digits
    crit = chosen.report["importance_choice"]["chosen"]
    alone = run(model, PruneConfig(target_macs=0.7, importance=crit, **FAST), Context(calibration=calib, progress=silent))
    x = np.load(MODELS / "digits_eval.npz")["input"][:32]
    a, b = _outputs(chosen.model, [{"input": x}]), _outputs(alone.model, [{"input": x}])
    np.testing.assert_allclose(a[0]["logits"], b[0]["logits"], rtol=1e-5, atol=1e-5)


def test_the_default_is_auto_with_calibration_and_a_target_else_l1(digits, chosen):
    model, calib = digits
    assert PruneConfig().importance is None
    default = run(model, PruneConfig(target_macs=0.7, **FAST), Context(calibration=calib, progress=silent))
    assert default.report["importance_choice"] == chosen.report["importance_choice"]
    assert default.report["importance"] == chosen.report["importance"]
    few = calib.take(0, 8)  # too few to hold a quarter out: l1, not an error
    assert run(model, PruneConfig(target_macs=0.7, **FAST), Context(calibration=few, progress=silent)).report["importance"] == "l1"
    no_data = run(model, PruneConfig(target_macs=0.7, round_to=4), Context(progress=silent))
    assert no_data.report["importance"] == "l1" and "importance_choice" not in no_data.report
    no_target = run(model, PruneConfig(ratio=0.3), Context(calibration=calib, progress=silent))
    assert no_target.report["importance"] == "l1"


def test_auto_without_what_it_needs_is_one_clear_error(digits):
    model, calib = digits
    with pytest.raises(SlimError, match="real calibration data"):
        run(model, PruneConfig(target_macs=0.7, importance="auto", round_to=4), Context(progress=silent))
    with pytest.raises(SlimError, match="at least 16 calibration samples"):
        run(model, PruneConfig(target_macs=0.7, importance="auto", **FAST), Context(calibration=calib.take(0, 8), progress=silent))
    with pytest.raises(SlimError, match="needs --target-macs"):
        run(model, PruneConfig(ratio=0.3, importance="auto"), Context(calibration=calib, progress=silent))


@pytest.mark.slow
def test_cli_auto_without_calib_is_one_line_exit_2(tmp_path):
    import subprocess
    import sys
    out = tmp_path / "out.onnx"
    proc = subprocess.run([sys.executable, "-m", "onnxslim.cli", str(MODELS / "digits_resnet_folded.onnx"), str(out),
                           "--target-macs", "0.5", "--importance", "auto", "-q"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and not out.exists()
    assert proc.stderr.strip().splitlines() == ["onnxslim: error: --importance auto needs real calibration data (--calib); without it, use l1"]
