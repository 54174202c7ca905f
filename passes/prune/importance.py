"""Channel importance from weights: filter norms (Li et al. 2017), BatchNorm gamma (Network Slimming), random.

Scores are per class of a group and aggregate over all the group's weight members. Each member's per-channel
norms are divided by their mean first, so a wide 3x3 conv does not drown a 1x1 one in the sum.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from onnxslim.channels import BN_SCALE, EXIT, SOURCE, Analysis, Group
from onnxslim.ondisk import values_of

WEIGHT_CRITERIA = ("l1", "l2", "bn", "random")


def _constant_values(analysis: Analysis, space) -> np.ndarray:
    tensor = analysis.nodes[space.node].inputs[space.input_index]
    assert isinstance(tensor, gs.Constant)
    return values_of(tensor)  # a weight on disk is read for its norms, not kept in memory


def _per_channel_norm(values: np.ndarray, axis: int, p: int) -> np.ndarray:
    moved = np.moveaxis(np.asarray(values, dtype=np.float64), axis, 0).reshape(values.shape[axis], -1)
    return np.abs(moved).sum(1) if p == 1 else np.sqrt((moved ** 2).sum(1))


def weight_importance(analysis: Analysis, group: Group, criterion: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Scores per class (higher = more important) and the criterion actually used (bn falls back to l1
    for groups without a BatchNormalization)."""
    if criterion == "random":
        return rng.random(group.n_classes), "random"
    roles = (BN_SCALE,) if criterion == "bn" else (SOURCE, EXIT)
    members = [s for s in group.spaces if s.role in roles]
    used = criterion
    if criterion == "bn" and not members:
        members, used = [s for s in group.spaces if s.role in (SOURCE, EXIT)], "l1 (no BatchNormalization in group)"
    p = 2 if criterion == "l2" else 1
    score = np.zeros(group.n_classes)
    for space in members:
        values = _constant_values(analysis, space)
        norm = np.abs(values.astype(np.float64)) if space.role == BN_SCALE else _per_channel_norm(values, space.axis, p)
        norm = norm / (norm.mean() + 1e-12)
        np.add.at(score, group.class_of[space.id], norm)
    return score, used
