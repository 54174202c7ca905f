"""Element-wise coupling: unary ops and per-channel parameters follow the channels; binary ops of two
activations tie both producers; SE gating multiplies by a per-channel scale. Adding an element-wise op is
one name in `onnxslim.ops` (UNARY/BINARY) and its case here."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

from oracle import GraphBuilder, check_oracle
from rule_cases import C, X, examples, sandwich, se_block, seeds

from onnxslim import ops


UNARY = {
    "Relu": lambda b, t: b.op("Relu", [t]),
    "LeakyRelu": lambda b, t: b.op("LeakyRelu", [t], alpha=0.1),
    "Sigmoid": lambda b, t: b.op("Sigmoid", [t]),
    "HardSigmoid": lambda b, t: b.op("HardSigmoid", [t]),
    "HardSwish": lambda b, t: b.op("HardSwish", [t]),
    "Tanh": lambda b, t: b.op("Tanh", [t]),
    "Erf": lambda b, t: b.op("Erf", [t]),
    "Softplus": lambda b, t: b.op("Softplus", [t]),
    "Clip": lambda b, t: b.op("Clip", [t, b.const(np.float32(0)), b.const(np.float32(6))]),
    "Dropout": lambda b, t: b.op("Dropout", [t]),
    "Cast": lambda b, t: b.op("Cast", [t], to=1),
    "Identity": lambda b, t: b.op("Identity", [t]),
    "SiLU": lambda b, t: b.op("Mul", [t, b.op("Sigmoid", [t])]),
    "GeluErf": lambda b, t: b.op("Mul", [b.op("Mul", [t, b.op("Add", [b.op("Erf", [b.op("Div", [t, b.const(np.float32(1.41421))])]), b.const(np.float32(1))])]), b.const(np.float32(0.5))]),
    "PRelu": lambda b, t: b.op("PRelu", [t, b.const(np.abs(b.rng.standard_normal((C, 1, 1))).astype(np.float32))]),
    "AddConst": lambda b, t: b.op("Add", [t, b.randn(C, 1, 1)]),
    "SubConstLeft": lambda b, t: b.op("Sub", [b.randn(C, 1, 1), t]),
    "MulConst": lambda b, t: b.op("Mul", [t, b.randn(1, C, 1, 1)]),
    "DivConst": lambda b, t: b.op("Div", [t, b.const(np.full((C, 1, 1), 2.0, np.float32))]),
    "MulScalar": lambda b, t: b.op("Mul", [t, b.const(np.float32(3))]),
    "AddFullConst": lambda b, t: b.op("Add", [t, b.randn(C, 8, 8)]),
    "MaxPool": lambda b, t: b.op("MaxPool", [t], kernel_shape=[2, 2], strides=[2, 2]),
    "AveragePool": lambda b, t: b.op("AveragePool", [t], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    "Resize": lambda b, t: b.op("Resize", [t, "", b.const(np.array([1, 1, 2, 2], np.float32))], mode="nearest"),
    "Pad": lambda b, t: b.op("Pad", [t, b.const(np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64))]),
    "BatchNorm": lambda b, t: b.op("BatchNormalization", [t, b.randn(C), b.randn(C), b.randn(C), b.const(np.abs(b.rng.standard_normal(C)).astype(np.float32) + 0.5)]),
    "InstanceNorm": lambda b, t: b.op("InstanceNormalization", [t, b.randn(C), b.randn(C)]),
    "ReduceMeanKeep": lambda b, t: b.op("ReduceMean", [t], axes=[2, 3], keepdims=1),
    "GlobalAveragePool": lambda b, t: b.op("GlobalAveragePool", [t]),
    "GlobalMaxPool": lambda b, t: b.op("GlobalMaxPool", [t]),
    "TransposeRoundTrip": lambda b, t: b.op("Transpose", [b.op("Relu", [b.op("Transpose", [t], perm=[0, 2, 3, 1])])], perm=[0, 3, 1, 2]),
    "UnsqueezeSqueeze": lambda b, t: b.op("Squeeze", [b.op("Unsqueeze", [t, b.const(np.array([2], np.int64))]), b.const(np.array([2], np.int64))]),
    "SliceSpatial": lambda b, t: b.op("Slice", [t, b.const(np.array([1], np.int64)), b.const(np.array([7], np.int64)), b.const(np.array([3], np.int64))]),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@examples
@given(seed=seeds)
def test_unary_and_passthrough_rules(name, seed):
    model = sandwich(UNARY[name])(seed % 1000)
    _, pruned, analysis = check_oracle(model, seed, fold_bn=name != "BatchNorm")
    # the group through the op is prunable: the op did not freeze it
    assert any(g.n_classes == C and g.prunable == C for g in analysis.groups), analysis.report()


def _binary_activations(op):
    def build(seed=0):
        b = GraphBuilder(seed)
        t1, t2 = b.conv("x", 3, C, k=3), b.conv("x", 3, C, k=1)
        t = b.op(op, [t1, b.op("Sigmoid", [t2])] if op in ("Div", "Pow") else [t1, t2])
        return b.model(X, [b.conv(t, C, 4)])
    return build


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean"])
@examples
@given(seed=seeds)
def test_binary_of_two_activations_ties_both(op, seed):
    _, _, analysis = check_oracle(_binary_activations(op)(seed % 1000), seed)
    prunable = [g for g in analysis.prunable_groups if g.n_classes == C]
    assert len(prunable) == 1 and len(prunable[0].members("source")) == 2


@examples
@given(seed=seeds)
def test_squeeze_excitation_gating(seed):
    _, _, analysis = check_oracle(se_block(seed % 1000), seed)
    assert len(analysis.prunable_groups) == 2  # the gated channels (with the expand conv) and the SE bottleneck


def test_a_registered_unary_op_is_pruned_through():
    """Shrink: one name in ops.UNARY; the group through it is prunable and pruning it is exact."""
    assert ops.kind_of("Shrink").channels is not None and ops.kind_of("Shrink").macs is None
    model = sandwich(lambda b, t: b.op("Shrink", [t], lambd=0.5, bias=0.1))(0)
    _, pruned, analysis = check_oracle(model, 1)
    assert any(g.n_classes == C and g.prunable == C for g in analysis.groups)
    assert any(n.op_type == "Shrink" for n in pruned.graph.node)
