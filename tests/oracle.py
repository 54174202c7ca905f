"""The pruning correctness oracle of DESIGN.md, shared by the op-rule and family tests.

For a keep plan, the pruned model must equal the *masked* model (the original with removed channels
zeroed at every exit) on random inputs; it must pass onnx.checker and keep input/output names and shapes.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxslim.channels import analyze
from onnxslim.inputs import random_feeds
from onnxslim.passes import cleanup
from onnxslim.passes.prune.allocate import keep_every_space_nonempty
from onnxslim.passes.prune.apply import apply_plan, masked_model

ort.set_default_logger_severity(3)
OPSET = 17


def run(model: onnx.ModelProto, feed: dict) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)


def random_plan(analysis, rng: np.random.Generator, keep_prob: float = 0.6) -> dict:
    """A random keep-set per prunable group; drawn again (up to 20 times) while it would remove nothing."""
    for _ in range(20):
        plan = {}
        for g in analysis.prunable_groups:
            mask = g.frozen | (rng.random(g.n_classes) < keep_prob)
            plan[g.id] = keep_every_space_nonempty(g, mask, rng.random(g.n_classes))
        if removed(plan):
            break
    return plan


def removed(plan: dict) -> int:
    return int(sum((~np.asarray(keep, bool)).sum() for keep in plan.values()))


def check_oracle(model: onnx.ModelProto, seed: int, *, fold_bn: bool = True, keep_prob: float = 0.6,
                 rtol: float = 1e-4, shapes: dict | None = None):
    """Prune with a random plan and assert pruned == masked. Returns (clean model, pruned model, analysis)."""
    clean = cleanup.run(model, cleanup.CleanupConfig(fold_bn=fold_bn)).model
    analysis = analyze(clean)
    plan = random_plan(analysis, np.random.default_rng(seed), keep_prob)
    assert removed(plan) > 0, f"nothing to remove: {analysis.report()}"  # else pruned == masked says nothing
    masked = masked_model(analysis, plan, clean)
    pruned = apply_plan(analyze(clean), plan, clean)
    onnx.checker.check_model(pruned, full_check=True)
    feed = random_feeds(clean, shapes, count=1, seed=seed)[0]
    expect, got = run(masked, feed), run(pruned, feed)
    assert [o.name for o in pruned.graph.output] == [o.name for o in model.graph.output]
    assert [i.name for i in pruned.graph.input] == [i.name for i in clean.graph.input]
    for e, g in zip(expect, got):
        assert e.shape == g.shape
        scale = max(float(np.abs(e).max()), 1e-3)
        np.testing.assert_allclose(g, e, rtol=rtol, atol=rtol * scale)
    return clean, pruned, analysis


# -- hand-built graphs ------------------------------------------------------------------------------------
class GraphBuilder:
    """Tiny helper over onnx.helper: named tensors, random constants, one output."""

    def __init__(self, seed: int = 0):
        self.nodes, self.inits, self.rng, self.n = [], [], np.random.default_rng(seed), 0

    def const(self, array, name=None) -> str:
        name = name or f"c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def randn(self, *shape) -> str:
        return self.const(self.rng.standard_normal(shape).astype(np.float32))

    def op(self, op_type, inputs, n_out=1, **attrs):
        outs = [f"t{self.n + i}" for i in range(n_out)]
        self.n += n_out
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=f"{op_type}_{self.n}", **attrs))
        return outs[0] if n_out == 1 else outs

    def conv(self, x, cin, cout, k=1, group=1, bias=True, **attrs):
        inputs = [x, self.randn(cout, cin // group, k, k)]
        if bias:
            inputs.append(self.randn(cout))
        pads = [k // 2] * 4
        return self.op("Conv", inputs, kernel_shape=[k, k], pads=pads, group=group, **attrs)

    def model(self, inputs: dict, outputs: list[str], opset: int = OPSET) -> onnx.ModelProto:
        ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()]
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
        graph = helper.make_graph(self.nodes, "g", ins, outs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        return onnx.shape_inference.infer_shapes(model)
