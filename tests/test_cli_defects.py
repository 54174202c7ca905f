"""Small CLI defects, each checked in a process of its own: a closed pipe and the README's lower-level API in
real subprocesses; the dynamic int8 warning, pruning a quantized model and `inspect` on a transformer
forked by tests/cli_fork.py."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from cli_fork import run_cli

REPO = Path(__file__).resolve().parent.parent
TRANSFORMER = REPO / "models" / "families" / "transformer.onnx"
CLI = [sys.executable, "-m", "onnxslim.cli"]
ENV = {**{k: v for k, v in os.environ.items() if k != "ONNXSLIM_DEBUG"}, "OMP_NUM_THREADS": "1"}


def _run(args, cwd):
    return run_cli(args, cwd=cwd, env=ENV, timeout=120)


@pytest.mark.slow
def test_inspect_into_a_closed_pipe_exits_quietly():
    # the reader is gone before the first write (like `| head -1` after its line): no error, exit 0
    proc = subprocess.Popen(CLI + ["inspect", str(TRANSFORMER)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0
    assert err == ""


@pytest.mark.slow
def test_readme_lower_level_api_works_after_a_bare_import():
    readme = (REPO / "README.md").read_text()
    assert "onnxslim.channels.analyze(model)" in readme
    code = ("import onnx, onnxslim; a = onnxslim.channels.analyze(onnx.load(%r)); "
            "g = a.groups[0]; print(len(a.groups), len(a.prunable_groups), bool(g.trace()), type(g.reasons).__name__)" % str(TRANSFORMER))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["9", "2", "True", "list"]


def test_dynamic_int8_says_nothing_about_calibration(tmp_path):
    run = _run([TRANSFORMER, "out.onnx", "--quantize", "int8-dynamic", "--no-latency", "--report", "r.json"], tmp_path)
    assert run.returncode == 0, run.stderr
    text = run.stdout + run.stderr
    assert "warning" not in text
    assert "calibrated on random data" not in text and "calibrating on random" not in text
    assert "activations at run time" in run.stdout
    report = json.loads((tmp_path / "r.json").read_text())["passes"]["quantize"]
    assert "warning" not in report and "no calibration needed" in report["note"]


def _quantized_model(path):
    """Two Convs whose int8 weights reach them through DequantizeLinear (a QDQ model)."""
    rng = np.random.default_rng(0)
    inits, nodes, x = [], [], "x"
    for i, (cin, cout) in enumerate([(3, 8), (8, 4)]):
        inits += [numpy_helper.from_array(rng.integers(-100, 100, (cout, cin, 3, 3)).astype(np.int8), f"w{i}_q"),
                  numpy_helper.from_array(np.full(cout, 0.01, np.float32), f"w{i}_s"),
                  numpy_helper.from_array(np.zeros(cout, np.int8), f"w{i}_z")]
        nodes += [helper.make_node("DequantizeLinear", [f"w{i}_q", f"w{i}_s", f"w{i}_z"], [f"w{i}"], name=f"dq{i}", axis=0),
                  helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        x = f"r{i}"
    graph = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_pruning_a_quantized_model_says_why(tmp_path):
    _quantized_model(tmp_path / "q.onnx")
    for option in (["--prune", "0.3"], ["--target-macs", "0.5"]):
        run = _run(["q.onnx", "out.onnx", *option, "--no-latency"], tmp_path)
        assert run.returncode == 2
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("onnxslim: error: nothing to prune: the model is already quantized")
        assert "'conv0'" in lines[0] and "DequantizeLinear" in lines[0]
        assert not (tmp_path / "out.onnx").exists()


def test_inspect_transformer_counts_channels_and_aligns_columns(tmp_path):
    run = _run(["inspect", TRANSFORMER], tmp_path)
    assert run.returncode == 0
    out = run.stdout
    # the Q projection is 64 wide, 4 heads of 16: the heads are the units (issue 13)
    assert re.search(r"#0 +4/4 heads prunable \(64 ch, head dim 16\) +/layers/layers\.0/attn/q/MatMul\.out", out)
    assert re.search(r"#2 +256/256 prunable +/layers/layers\.0/ffn", out)
    layer_lines = out.split("layers (MACs at batch 1):")[1].strip("\n").splitlines()
    assert any("LayerNormalization" in line for line in layer_lines)
    assert len({line.index(" MACs") for line in layer_lines}) == 1  # one column, long op names included
    assert len({line.index(" params") for line in layer_lines}) == 1
    group_lines = [line for line in out.splitlines() if re.match(r"  #\d", line)]
    assert len({line.index(" /layers") for line in group_lines}) == 1


def test_quiet_bare_run_without_validation_prints_nothing_and_never_loads_onnxruntime(tmp_path):
    # -q means nothing on the terminal; and a bare --no-validate run needs no onnxruntime (its import is a
    # tenth of a second of start-up, most of the tool's time on a small model) nor sympy (0.3 s, imported by
    # onnx-ir for symbolic dims this model does not have)
    code = ("import sys, onnxslim.cli as c; sys.argv = ['onnxslim', %r, 'out.onnx', '--no-validate', '-q']\n"
            "try:\n    c.main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print(type(sys.modules['onnxruntime']).__name__, type(sys.modules['sympy']).__name__)" % str(TRANSFORMER))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and proc.stdout.split() == ["_LazyModule", "_StandIn"]
    assert len(onnx.load(str(tmp_path / "out.onnx")).graph.node) > 0
