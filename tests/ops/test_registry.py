"""The op registry is the one place per op kind: the channel analysis, the MAC counter, the latency model
and the linear-layer view all read their op sets from it."""
from __future__ import annotations

from onnx import helper

from onnxslim import ops
from onnxslim.channels import Builder
from onnxslim.passes.prune import latency


def test_the_latency_model_maps_the_registry_kernels():
    assert latency.MAC_OPS == ops.compute_ops() == {"Conv", "ConvTranspose", "Gemm", "MatMul", "QLinearConv",
                                                    "ConvInteger", "MatMulInteger", "QLinearMatMul"}
    assert {"FusedConv", "NchwcConv", "FusedGemm", "FusedMatMul", "MatMulIntegerToFloat"} <= latency.MAC_KERNELS
    assert latency.MAC_KERNELS == ops.compute_kernels()


def test_linear_layers_are_the_four_contracting_float_ops():
    assert ops.linear_ops() == {"Conv", "ConvTranspose", "Gemm", "MatMul"}


def test_every_op_with_a_channel_rule_is_a_standard_op_and_rules_are_found_by_the_analysis():
    rules = ops.channel_rules()
    assert set(ops.UNARY + ops.BINARY) <= set(rules)
    assert "MatMulNBits" not in rules and "Einsum" not in rules  # MACs only: pruning freezes them
    assert Builder.__init__.__code__.co_varnames[:3] == ("self", "graph", "rules")


def test_macs_come_from_the_entry_and_other_domains_count_zero():
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    shapes = {"a": (2, 3, 4), "b": (4, 5), "y": (2, 3, 5)}
    assert ops.node_macs(node, shapes) == 2 * 3 * 4 * 5
    fused = helper.make_node("MatMul", ["a", "b"], ["y"], domain="com.example")
    assert ops.node_macs(fused, shapes) == 0
    assert ops.node_macs(helper.make_node("Relu", ["a"], ["y"]), shapes) == 0
