"""MatMul+Add -> Gemm (2-D only) and Gemm+Mul/Add into alpha, beta and C."""
import numpy as np
from onnx import helper

from rewrite_case import assert_fires, assert_refuses, f32, model, ops


def test_matmul_add_becomes_gemm_with_symbolic_rows():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["b", "m"], ["y"])]
    m = model(nodes, [("x", ["N", 5])], [("y", ["N", 4])], {"w": f32(5, 4), "b": f32(4)})
    out, _ = assert_fires(m, "matmul_add_gemm", sizes=(1, 7), rtol=1e-5, atol=1e-5)
    assert ops(out) == ["Gemm"]


def test_matmul_add_refuses_3d_input():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    m = model(nodes, [("x", ["N", 3, 5])], [("y", ["N", 3, 4])], {"w": f32(5, 4), "b": f32(4)})
    assert_refuses(m, "matmul_add_gemm", "not both 2-D")


def test_matmul_add_refuses_broadcasting_addend():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    m = model(nodes, [("x", ["N", 5])], [("y", [3, "N", 4])], {"w": f32(5, 4), "b": f32(3, 1, 4)})
    assert_refuses(m, "matmul_add_gemm", "more than 2 dims")


def test_gemm_mul_scalar_and_add_into_c():
    nodes = [helper.make_node("Gemm", ["x", "w", "c"], ["g"], transB=1, alpha=0.5, beta=2.0),
             helper.make_node("Mul", ["g", "s"], ["h"]), helper.make_node("Add", ["h", "k"], ["y"])]
    inits = {"w": f32(4, 5), "c": f32(4), "s": np.array(3.0, np.float32), "k": f32(1, 4)}
    m = model(nodes, [("x", ["N", 5])], [("y", ["N", 4])], inits)
    out, counts = assert_fires(m, "gemm_mul", rtol=1e-5, atol=1e-5)
    assert counts["gemm_add"] == 1 and ops(out) == ["Gemm"]


def test_gemm_mul_refuses_per_column_factor():
    nodes = [helper.make_node("Gemm", ["x", "w"], ["g"]), helper.make_node("Mul", ["g", "s"], ["y"])]
    m = model(nodes, [("x", ["N", 5])], [("y", ["N", 4])], {"w": f32(5, 4), "s": f32(4)})
    assert_refuses(m, "gemm_mul", "not a scalar")
