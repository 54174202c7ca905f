"""Contracting ops: grouped and depthwise Conv (whole groups go), ConvTranspose (its output channels are a
new group), a MatMul feed-forward block (hidden features)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

from oracle import GraphBuilder, check_oracle
from rule_cases import C, X, examples, sandwich, seeds


def _grouped(group, cout):
    def build(seed=0):
        b = GraphBuilder(seed)
        t = b.op("Relu", [b.conv("x", 3, C, k=1)])
        t = b.op("Relu", [b.conv(t, C, cout, k=3, group=group)])
        return b.model(X, [b.conv(t, cout, 4)])
    return build


@pytest.mark.parametrize("group,cout", [(C, C), (C, 2 * C), (2, C), (4, 2 * C)])
@examples
@given(seed=seeds)
def test_grouped_and_depthwise_conv(group, cout, seed):
    clean, pruned, _ = check_oracle(_grouped(group, cout)(seed % 1000), seed)
    conv = [n for n in pruned.graph.node if n.op_type == "Conv"][1]
    groups = next(a.i for a in conv.attribute if a.name == "group")
    w = next(i for i in pruned.graph.initializer if i.name == conv.input[1])
    assert w.dims[0] % groups == 0  # whole conv groups were removed


def _conv_transpose(seed=0):
    b = GraphBuilder(seed)
    t = b.op("Relu", [b.conv("x", 3, C, k=3)])
    t = b.op("ConvTranspose", [t, b.randn(C, 6, 2, 2), b.randn(6)], kernel_shape=[2, 2], strides=[2, 2])
    return b.model(X, [b.conv(b.op("Relu", [t]), 6, 4)])


@examples
@given(seed=seeds)
def test_conv_transpose(seed):
    _, _, analysis = check_oracle(_conv_transpose(seed % 1000), seed)
    assert sorted(g.n_classes for g in analysis.prunable_groups) == [6, C]


def _ffn(seed=0):
    b = GraphBuilder(seed)
    h = b.op("Add", [b.op("MatMul", ["x", b.randn(16, 32)]), b.randn(32)])
    h = b.op("Relu", [h])
    y = b.op("Add", [b.op("MatMul", [h, b.randn(32, 16)]), b.randn(16)])
    return b.model({"x": ["N", 5, 16]}, [b.op("Add", [y, "x"])])


@examples
@given(seed=seeds)
def test_matmul_ffn_hidden_features(seed):
    _, _, analysis = check_oracle(_ffn(seed % 1000), seed)
    assert [g.n_classes for g in analysis.prunable_groups] == [32]
    assert any("graph input 'x'" in r for g in analysis.groups for r in g.reasons)
