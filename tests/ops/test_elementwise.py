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


def se_block(seed=0):
    b = GraphBuilder(seed)
    t = b.op("Relu", [b.conv("x", 3, C, k=3)])
    s = b.op("GlobalAveragePool", [t])
    s = b.op("Relu", [b.conv(s, C, 4)])
    s = b.op("HardSigmoid", [b.conv(s, 4, C)])
    return b.model(X, [b.conv(b.op("Mul", [t, s]), C, 4)])


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
