"""The whole pipeline in one call: prune (with repair) -> low-rank -> int8, validated against the original."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

import onnxslim
from onnxslim.calibration import load_calibration
from onnxslim.passes.lowrank import LowRankConfig
from onnxslim.passes.prune import PruneConfig
from onnxslim.passes.quantize import QuantizeConfig

MODELS = Path(__file__).resolve().parent.parent / "models"


@pytest.mark.slow
def test_prune_lowrank_quantize_in_one_run():
    model = onnx.load(MODELS / "digits_resnet_folded.onnx")
    calib = load_calibration(str(MODELS / "digits_calib.npz"), model)
    result = onnxslim.optimize(model, prune=PruneConfig(target_macs=0.7, round_to=8),
                               lowrank=LowRankConfig(target_macs=0.8), quantize=QuantizeConfig(),
                               calibration=calib, data=MODELS / "digits_eval.npz", latency=False)
    report = result.report
    assert list(report["passes"]) == ["cleanup", "prune", "lowrank", "quantize"]
    onnx.checker.check_model(result.model)
    ops = {n.op_type for n in result.model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # quantization ran last, on the final weights
    assert report["validation"]["macs"]["ratio"] < 0.7
    # repair keeps the classifier's decisions on held-out digits
    assert report["validation"]["outputs"]["logits"]["top1_agreement"] >= 0.9
    assert [o.name for o in result.model.graph.output] == ["logits"]


def test_optimize_without_passes_is_an_exact_cleanup():
    result = onnxslim.optimize(str(MODELS / "digits_resnet.onnx"), latency=False)
    outputs = result.report["validation"]["outputs"]["logits"]
    assert outputs["top1_agreement"] == 1.0 and outputs["max_abs_error"] < 1e-4
    assert not any(n.op_type == "BatchNormalization" for n in result.model.graph.node)  # folded
    assert np.isclose(result.report["validation"]["macs"]["ratio"], 1.0)
