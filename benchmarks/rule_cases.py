"""Writes one small model per rewrite-rule class into OUTDIR, each with a symbolic batch dim, to compare what
our bare command and OnnxSlim simplify (run bench_vs_onnxslim.py on OUTDIR/*.onnx afterwards).

    python benchmarks/rule_cases.py OUTDIR"""
from __future__ import annotations

import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

R = np.random.default_rng(0)
I64 = np.int64


def f32(*s):
    return R.standard_normal(s).astype(np.float32)


def _m(nodes, x, y, inits, elem=TensorProto.FLOAT, out_elem=None):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", elem, x)],
                          [helper.make_tensor_value_info("y", out_elem or elem, y)],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def cases() -> dict:
    n = helper.make_node
    conv = n("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])
    w = {"w": f32(4, 3, 3, 3)}
    return {
        "neutral_mul1_add0": _m([n("Relu", ["x"], ["r"]), n("Mul", ["r", "one"], ["a"]), n("Add", ["a", "zero"], ["b"]), n("Relu", ["b"], ["y"])],
                                ["N", 4], ["N", 4], {"one": np.ones(4, np.float32), "zero": np.zeros(4, np.float32)}),
        "cast_roundtrip": _m([n("Relu", ["x"], ["r"]), n("Cast", ["r"], ["a"], to=TensorProto.DOUBLE), n("Cast", ["a"], ["b"], to=TensorProto.FLOAT), n("Relu", ["b"], ["y"])],
                             ["N", 4], ["N", 4], {}),
        "expand_same_shape": _m([n("Relu", ["x"], ["r"]), n("Expand", ["r", "s"], ["a"]), n("Relu", ["a"], ["y"])], ["N", 4], ["N", 4], {"s": np.array([1, 4], I64)}),
        "unsqueeze_squeeze": _m([n("Relu", ["x"], ["r"]), n("Unsqueeze", ["r", "ax"], ["a"]), n("Squeeze", ["a", "ax"], ["b"]), n("Relu", ["b"], ["y"])],
                                ["N", 4], ["N", 4], {"ax": np.array([1], I64)}),
        "squeeze_chain": _m([n("Squeeze", ["x", "a1"], ["a"]), n("Squeeze", ["a", "a2"], ["y"])], [1, "N", 1, 4], ["N", 4],
                            {"a1": np.array([0], I64), "a2": np.array([1], I64)}),
        "concat_nested": _m([n("Relu", ["x"], ["r"]), n("Concat", ["r", "r"], ["a"], axis=1), n("Concat", ["a", "r"], ["y"], axis=1)], ["N", 4], ["N", 12], {}),
        "conv_div": _m([conv, n("Div", ["c", "d"], ["y"])], ["N", 3, 8, 8], ["N", 4, 8, 8], {**w, "d": np.abs(f32(4, 1, 1)) + 0.5}),
        "reducemean_unsqueeze": _m([n("ReduceMean", ["x"], ["a"], axes=[1], keepdims=0), n("Unsqueeze", ["a", "ax"], ["y"])],
                                   ["N", 4, 5], ["N", 1, 5], {"ax": np.array([1], I64)}),
        "convtranspose_grouped_bn": _m([n("ConvTranspose", ["x", "wt"], ["c"], group=2), n("BatchNormalization", ["c", "g", "b", "m", "v"], ["y"])],
                                       ["N", 4, 5, 5], ["N", 4, 6, 6], {"wt": f32(4, 2, 2, 2), "g": f32(4), "b": f32(4), "m": f32(4), "v": np.abs(f32(4)) + 0.5}),
        "conv_add_mul": _m([conv, n("Mul", ["c", "s"], ["a"]), n("Add", ["a", "k"], ["y"])], ["N", 3, 8, 8], ["N", 4, 8, 8], {**w, "s": f32(4, 1, 1), "k": f32(1, 4, 1, 1)}),
        "pad_conv": _m([n("Pad", ["x", "p"], ["q"]), n("Conv", ["q", "w"], ["y"])], ["N", 3, 8, 8], ["N", 4, 8, 8], {**w, "p": np.array([0, 0, 1, 1, 0, 0, 1, 1], I64)}),
        "matmul_add_2d": _m([n("MatMul", ["x", "w"], ["a"]), n("Add", ["a", "b"], ["y"])], ["N", 5], ["N", 4], {"w": f32(5, 4), "b": f32(4)}),
        "transpose_pair": _m([n("Transpose", ["x"], ["a"], perm=[0, 2, 1]), n("Transpose", ["a"], ["y"], perm=[0, 2, 1])], ["N", 3, 4], ["N", 3, 4], {}),
        "cse_twin_branches": _m([n("Relu", ["x"], ["a"]), n("Relu", ["x"], ["b"]), n("Add", ["a", "b"], ["y"])], ["N", 4], ["N", 4], {}),
    }


def main() -> None:
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, m in cases().items():
        onnx.checker.check_model(m, full_check=True)
        onnx.save(m, os.path.join(out, f"{name}.onnx"))


if __name__ == "__main__":
    main()
