"""The deferred sympy import (onnxslim/lazy_import.py): nothing changes for code that does use sympy."""
import subprocess
import sys

# each case in a fresh interpreter: the stand-ins only go in before onnx-ir is first imported
CASES = {
    "onnx-ir's symbolic dims": (
        "import onnxslim, onnx_ir as ir\n"
        "d = ir.SymbolicDim('N')\n"
        "assert str(d + 1) == 'N + 1' and str(d * 2) == '2*N'\n"
        "import sympy\n"
        "assert type(sympy).__name__ == 'module' and sympy.__file__.endswith('__init__.py')"),
    "a user's own sympy": (
        "import sys, onnxslim.cli\n"
        "assert type(sys.modules['sympy']).__name__ == '_StandIn'\n"
        "import sympy\n"
        "from sympy import Symbol\n"
        "import sympy.core\n"
        "x = Symbol('x')\n"
        "assert sympy.expand((x + 1) ** 2) == x ** 2 + 2 * x + 1\n"
        "assert isinstance(x, sympy.Expr) and sys.modules['sympy'] is not None"),
    "folding a model with dims given as expressions": (
        "import onnx, onnx.helper as h, numpy as np, onnxruntime as ort\n"
        "from onnxslim.passes.cleanup.fold import fold\n"
        "x = h.make_tensor_value_info('x', onnx.TensorProto.FLOAT, ['N', 'N*2'])\n"
        "y = h.make_tensor_value_info('y', onnx.TensorProto.FLOAT, ['N', 'N*2'])\n"
        "two = h.make_tensor('two', onnx.TensorProto.FLOAT, [], [2.0])\n"
        "nodes = [h.make_node('Add', ['two', 'two'], ['four']), h.make_node('Mul', ['x', 'four'], ['y'])]\n"
        "m = h.make_model(h.make_graph(nodes, 'g', [x], [y], [two]), opset_imports=[h.make_opsetid('', 17)])\n"
        "out, _ = fold(m, 1 << 20)\n"
        "assert [n.op_type for n in out.graph.node] == ['Mul']\n"
        "a = np.ones((3, 6), np.float32)\n"
        "run = lambda mm: ort.InferenceSession(mm.SerializeToString()).run(None, {'x': a})[0]\n"
        "assert np.array_equal(run(out), run(m))\n"),
}


def _run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_symbolic_dims_still_compute_with_sympy_deferred():
    proc = _run(CASES["onnx-ir's symbolic dims"])
    assert proc.returncode == 0, proc.stderr


def test_a_users_sympy_is_the_real_one():
    proc = _run(CASES["a user's own sympy"])
    assert proc.returncode == 0, proc.stderr


def test_folding_works_whether_or_not_sympy_is_loaded():
    proc = _run(CASES["folding a model with dims given as expressions"])
    assert proc.returncode == 0, proc.stderr
