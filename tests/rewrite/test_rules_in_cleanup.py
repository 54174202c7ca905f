"""The rules inside the cleanup pass and the CLI: counts in the report, BN kept on request, --fp16."""
import json

import numpy as np
import onnx
from onnx import TensorProto, helper

from cli_fork import run_cli

from onnxslim.passes.cleanup import CleanupConfig, run
from rewrite_case import _feeds, f32, model, ops
from rewrite_case import run as ort_run


def _convt_bn_mul():
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Mul", ["c", "s"], ["d"]),
             helper.make_node("ConvTranspose", ["d", "wt"], ["e"], group=2),
             helper.make_node("BatchNormalization", ["e", "g", "be", "mu", "var"], ["y"])]
    inits = {"w": f32(4, 3, 3, 3), "s": f32(4, 1, 1), "wt": f32(4, 2, 2, 2), "g": f32(4), "be": f32(4), "mu": f32(4),
             "var": np.abs(f32(4)) + 0.5}
    return model(nodes, [("x", ["N", 3, 6, 6])], [("y", ["N", 4, 7, 7])], inits)


def test_cleanup_reports_rule_counts_and_keeps_outputs():
    m = _convt_bn_mul()
    result = run(m)
    assert result.report["rules"] == {"conv_mul": 1, "convtranspose_bn": 1}
    assert ops(result.model) == ["Conv", "ConvTranspose"]
    feeds = _feeds(m, 2)
    np.testing.assert_allclose(ort_run(result.model, feeds)[0], ort_run(m, feeds)[0], rtol=1e-4, atol=1e-4)


def test_cleanup_keeps_batchnorm_when_asked():
    result = run(_convt_bn_mul(), CleanupConfig(fold_bn=False))
    assert "convtranspose_bn" not in result.report["rules"] and "BatchNormalization" in ops(result.model)


def test_cleanup_fp16_reports_and_keeps_io_types():
    m = _convt_bn_mul()
    result = run(m, CleanupConfig(fp16=True))
    assert result.report["fp16"]["kept_fp32"] == {}
    assert result.model.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert all(t.data_type != TensorProto.FLOAT for t in result.model.graph.initializer)


def test_cli_fp16_and_refusal_with_pruning(tmp_path):
    src, dst, rep = tmp_path / "m.onnx", tmp_path / "o.onnx", tmp_path / "r.json"
    onnx.save(_convt_bn_mul(), src)
    cmd = [src, dst, "--fp16", "--no-latency", "-q", "--report", rep]
    done = run_cli(cmd, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(rep.read_text())
    assert report["passes"]["cleanup"]["rules"]["conv_mul"] == 1
    assert min(o["cosine"] for o in report["validation"]["outputs"].values()) > 0.999
    bad = run_cli(cmd[:2] + ["--fp16", "--prune", "0.5"], cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("onnxslim: error: --fp16")
