"""Shared by the rewrite-rule tests: build a small model, apply the rules, and check what every rule must
keep: the rule fired (count), fewer or equal nodes, a valid model, the same outputs on random inputs for
several sizes of each symbolic dim; or, for a negative case, that the rule refused with a reason."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxslim.graph import infer_shapes, to_graph, to_model
from onnxslim.passes.rewrite import apply_rules

RNG = np.random.default_rng(0)
F = TensorProto.FLOAT


def model(nodes, inputs, outputs, inits=None, opset=17):
    """inputs/outputs: (name, shape) or (name, shape, elem_type); inits: {name: array}."""
    def vi(spec):
        name, shape, *t = spec
        return helper.make_tensor_value_info(name, t[0] if t else F, shape)
    graph = helper.make_graph(nodes, "g", [vi(s) for s in inputs], [vi(s) for s in outputs],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8 if opset < 21 else 10)
    onnx.checker.check_model(m, full_check=True)
    return m


def rewrite(m):
    reasons: list = []
    g = to_graph(infer_shapes(m))
    counts = apply_rules(g, reasons=reasons)
    return to_model(g, like=m), counts, reasons


def _feeds(m, size):
    feeds = {}
    for vi in m.graph.input:
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else size for d in t.shape.dim]
        dt = helper.tensor_dtype_to_np_dtype(t.elem_type)
        if dt.kind == "f":
            feeds[vi.name] = RNG.standard_normal(dims).astype(dt)
        elif dt == np.bool_:
            feeds[vi.name] = RNG.integers(0, 2, dims).astype(bool)
        else:
            feeds[vi.name] = RNG.integers(-100 if dt.kind == "i" else 0, 100, dims).astype(dt)
    return feeds


def run(m, feeds):
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def assert_fires(m, rule, times=1, sizes=(1, 3), rtol=1e-5, atol=1e-6):
    """Apply the rules; `rule` fired `times`, nodes did not grow, outputs equal for each symbolic-dim size."""
    out, counts, reasons = rewrite(m)
    assert counts.get(rule, 0) == times, (counts, [r for r in reasons if r[0] == rule])
    assert len(out.graph.node) <= len(m.graph.node)
    onnx.checker.check_model(out, full_check=True)
    assert [i.name for i in out.graph.input] == [i.name for i in m.graph.input]
    assert [o.name for o in out.graph.output] == [o.name for o in m.graph.output]
    for size in sizes:
        feeds = _feeds(m, size)
        for want, got in zip(run(m, feeds), run(out, feeds)):
            assert want.shape == got.shape and want.dtype == got.dtype
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    return out, counts


def assert_refuses(m, rule, reason_part):
    """`rule` did not fire and said why (the reason contains `reason_part`)."""
    out, counts, reasons = rewrite(m)
    assert counts.get(rule, 0) == 0, counts
    said = [r[2] for r in reasons if r[0] == rule]
    assert any(reason_part in r for r in said), said
    feeds = _feeds(m, 2)
    for want, got in zip(run(m, feeds), run(out, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    return out


def ops(m):
    return [n.op_type for n in m.graph.node]


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)
