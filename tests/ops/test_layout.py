"""Layout coupling: channels move through Flatten/Reshape (blocks), Transpose, Concat/Split/Slice (offsets),
a channel shuffle (Reshape-Transpose-Reshape), a spatial ReduceMean into Gemm."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

from oracle import GraphBuilder, check_oracle
from rule_cases import C, X, examples, sandwich, seeds


def _flatten_gemm(kind):
    def build(seed=0):
        b = GraphBuilder(seed)
        t = b.op("Relu", [b.conv("x", 3, C, k=3, strides=[2, 2])])  # [N, C, 4, 4]
        if kind == "flatten":
            f = b.op("Flatten", [t], axis=1)
        elif kind == "reshape":
            f = b.op("Reshape", [t, b.const(np.array([0, -1], np.int64))])
        else:  # NHWC flatten: channel is the innermost of the merged dims
            f = b.op("Flatten", [b.op("Transpose", [t], perm=[0, 2, 3, 1])], axis=1)
        h = b.op("Relu", [b.op("Gemm", [f, b.randn(12, C * 16), b.randn(12)], transB=1)])
        return b.model(X, [b.op("Gemm", [h, b.randn(12, 5), b.randn(5)])])
    return build


@pytest.mark.parametrize("kind", ["flatten", "reshape", "nhwc"])
@examples
@given(seed=seeds)
def test_flatten_and_reshape_into_gemm(kind, seed):
    clean, pruned, analysis = check_oracle(_flatten_gemm(kind)(seed % 1000), seed)
    assert sorted(g.n_classes for g in analysis.prunable_groups) == [C, 12]


def _reduce_into_gemm(seed=0):
    b = GraphBuilder(seed)
    t = b.op("Relu", [b.conv("x", 3, C, k=3)])
    f = b.op("ReduceMean", [t], axes=[2, 3], keepdims=0)
    return b.model(X, [b.op("Gemm", [f, b.randn(C, 5)])])


@examples
@given(seed=seeds)
def test_reduce_mean_spatial_into_gemm(seed):
    check_oracle(_reduce_into_gemm(seed % 1000), seed)


def _concat(seed=0):
    b = GraphBuilder(seed)
    t1, t2 = b.op("Relu", [b.conv("x", 3, 4, k=3)]), b.op("Relu", [b.conv("x", 3, 6, k=1)])
    t = b.op("Concat", [t1, "x", t2], axis=1)  # the graph input in the middle stays frozen
    return b.model(X, [b.conv(t, 13, 4)])


@examples
@given(seed=seeds)
def test_concat_offsets(seed):
    _, _, analysis = check_oracle(_concat(seed % 1000), seed)
    frozen = [g for g in analysis.groups if g.frozen.any()]
    assert any("graph input 'x'" in r for g in frozen for r in g.reasons)
    # one group: the concat output ties both branches; the input's 3 channels are its frozen classes
    [group] = analysis.prunable_groups
    assert (group.n_classes, group.prunable) == (13, 10)


def _split(seed=0, sizes=(3, 5)):
    b = GraphBuilder(seed)
    t = b.op("Relu", [b.conv("x", 3, sum(sizes), k=3)])
    a, c = b.op("Split", [t, b.const(np.array(sizes, np.int64))], n_out=2, axis=1)
    y = b.op("Add", [b.conv(a, sizes[0], 4), b.conv(c, sizes[1], 4)])
    return b.model(X, [y])


@examples
@given(seed=seeds)
def test_split_sizes_follow(seed):
    from onnx import numpy_helper
    clean, pruned, _ = check_oracle(_split(seed % 1000), seed)
    split = next(n for n in pruned.graph.node if n.op_type == "Split")
    inits = {i.name: numpy_helper.to_array(i) for i in pruned.graph.initializer}
    sizes = inits[split.input[1]].tolist()
    # each part's new size is what its consuming conv now reads
    consumers = [next(n for n in pruned.graph.node if n.op_type == "Conv" and n.input[0] == out) for out in split.output]
    assert sizes == [inits[c.input[1]].shape[1] for c in consumers]


def _slice_channels(seed=0):
    b = GraphBuilder(seed)
    t = b.op("Relu", [b.conv("x", 3, C, k=3)])
    half = b.op("Slice", [t, b.const(np.array([2], np.int64)), b.const(np.array([7], np.int64)), b.const(np.array([1], np.int64))])
    rest = b.op("Slice", [t, b.const(np.array([0], np.int64)), b.const(np.array([2], np.int64)), b.const(np.array([1], np.int64))])
    return b.model(X, [b.op("Add", [b.conv(half, 5, 4), b.conv(rest, 2, 4)])])


@examples
@given(seed=seeds)
def test_slice_on_channel_axis(seed):
    check_oracle(_slice_channels(seed % 1000), seed)


def _channel_shuffle(seed=0):
    b = GraphBuilder(seed)
    t = b.op("Relu", [b.conv("x", 3, C, k=1)])  # [N, 8, 8, 8]
    t = b.op("Reshape", [t, b.const(np.array([0, 2, C // 2, 8, 8], np.int64))])
    t = b.op("Transpose", [t], perm=[0, 2, 1, 3, 4])
    t = b.op("Reshape", [t, b.const(np.array([0, C, 8, 8], np.int64))])
    return b.model(X, [b.conv(t, C, 4)])


@examples
@given(seed=seeds)
def test_channel_shuffle_reshape_transpose(seed):
    _, _, analysis = check_oracle(_channel_shuffle(seed % 1000), seed)
    g = analysis.prunable_groups[0]
    assert g.n_classes == C // 2  # channels c and c + C/2 are removed together
