"""End-to-end pruning of one small model per architecture family (models/families, built by
models/build_families.py): every result passes onnx.checker, runs, keeps input/output names and shapes,
has fewer MACs, and equals the masked original (the oracle)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxslim.cost import model_cost
from onnxslim.inputs import random_feeds
from onnxslim.passes import cleanup
from onnxslim.passes.prune import PruneConfig, run as prune

from oracle import check_oracle, run

MODELS = Path(__file__).resolve().parent.parent / "models"
FAMILIES = sorted(p.stem for p in (MODELS / "families").glob("*.onnx"))
EXPECTED = {"resnet_basic", "resnet_bottleneck", "vgg", "mobilenetv2", "mobilenetv3", "efficientnet", "densenet",
            "inception", "squeezenet", "shufflenetv2", "regnet", "unet", "yolo_neck", "transformer"}


def load(name: str) -> onnx.ModelProto:
    return onnx.load(MODELS / "families" / f"{name}.onnx")


def test_every_family_is_shipped():
    assert EXPECTED <= set(FAMILIES)


@pytest.mark.parametrize("ratio", [0.3, 0.5])
@pytest.mark.parametrize("name", FAMILIES)
def test_family_prunes_to_a_valid_smaller_model(name, ratio):
    original = load(name)
    clean = cleanup.run(original).model
    result = prune(clean, PruneConfig(ratio=ratio, round_to=1))
    pruned = result.model
    onnx.checker.check_model(pruned, full_check=True)
    assert [i.name for i in pruned.graph.input] == [i.name for i in original.graph.input if i.name not in {t.name for t in original.graph.initializer}]
    assert [o.name for o in pruned.graph.output] == [o.name for o in original.graph.output]
    feed = random_feeds(original, count=1, seed=1)[0]
    feed = {k: np.concatenate([v, v]) for k, v in feed.items()}  # batch 2: the batch axis stays dynamic
    before, after = run(original, feed), run(pruned, feed)
    assert [b.shape for b in before] == [a.shape for a in after]
    macs_before, macs_after = model_cost(clean)["macs"], model_cost(pruned)["macs"]
    assert macs_after < macs_before
    # the estimate the allocator used is the real count
    assert abs(result.report["estimated_macs_fraction"] - macs_after / macs_before) < 0.02
    assert result.report["pruned_groups"]


@pytest.mark.parametrize("name", FAMILIES)
def test_family_matches_masked_oracle(name):
    check_oracle(load(name), seed=7)


def test_transformer_prunes_heads_and_ffn_and_says_why_the_stream_is_frozen():
    clean = cleanup.run(load("transformer")).model
    result = prune(clean, PruneConfig(ratio=0.5, round_to=1))
    report = result.report
    # per layer: the 4 attention heads (issue 13), then the FFN hidden layer
    assert [(g["before"], g["after"]) for g in report["pruned_groups"]] == [(4, 2), (256, 128)] * 2
    reasons = " | ".join(r for f in report["frozen"] for r in f["reasons"])
    assert "LayerNormalization normalizes over this axis" in reasons  # the residual stream


@pytest.mark.parametrize("target", [0.7, 0.5])
@pytest.mark.parametrize("allocation", ["global", "uniform"])
def test_target_macs_is_met(target, allocation):
    original = onnx.load(MODELS / "digits_resnet_folded.onnx")
    clean = cleanup.run(original).model
    pruned = prune(clean, PruneConfig(target_macs=target, allocation=allocation, round_to=1)).model
    ratio = model_cost(pruned)["macs"] / model_cost(original)["macs"]
    assert target - 0.1 < ratio <= target + 1e-9


def test_round_to_aligns_kept_widths():
    clean = cleanup.run(load("resnet_basic")).model
    result = prune(clean, PruneConfig(ratio=0.4, round_to=8))
    for g in result.report["pruned_groups"]:
        assert g["after"] % 8 == 0


def test_bn_importance_reads_gamma():
    original = onnx.load(MODELS / "digits_resnet.onnx")
    clean = cleanup.run(original, cleanup.CleanupConfig(fold_bn=False)).model
    assert any(n.op_type == "BatchNormalization" for n in clean.graph.node)
    result = prune(clean, PruneConfig(ratio=0.3, importance="bn", round_to=1))
    assert {g["importance"] for g in result.report["pruned_groups"]} == {"bn"}
    onnx.checker.check_model(result.model)
