"""`--ort-format`: onnxruntime's converter writes OUTPUT.ort and its required-operators config; the .ort
loads in an InferenceSession and gives the .onnx's outputs."""
import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from cli_fork import run_cli

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _run(args, cwd):
    return run_cli(args, cwd=cwd, env=ENV, timeout=300)


def _outputs(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def test_ort_format_written_and_runs_like_the_onnx(tmp_path):
    run = _run([MODELS / "digits_resnet_folded.onnx", "slim.onnx", "--prune", "0.3", "--ort-format", "--no-latency",
                "--report", "r.json"], tmp_path)
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "slim.onnx", "slim.ort", "slim.required_operators.config"]
    config = (tmp_path / "slim.required_operators.config").read_text()
    assert "Conv" in config and "Gemm" in config and "slim.ort" in config and ".ort." not in config  # no temp path
    x = np.load(MODELS / "digits_eval.npz")["input"][:16]
    a, b = _outputs(tmp_path / "slim.onnx", x), _outputs(tmp_path / "slim.ort", x)
    assert a.shape == b.shape == (16, 10)
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * np.abs(a).max())
    report = json.loads((tmp_path / "r.json").read_text())["ort_format"]
    assert report["max_relative_difference"] <= 1e-4 and report["size_bytes"] == (tmp_path / "slim.ort").stat().st_size
    assert "wrote" in run.stdout and "slim.ort" in run.stdout


def test_ort_format_of_an_int8_model(tmp_path):
    run = _run([MODELS / "digits_resnet_folded.onnx", "q.onnx", "--quantize", "int8", "--calib", MODELS / "digits_calib.npz",
                "--calib-size", "32", "--ort-format", "--no-latency", "-q"], tmp_path)
    assert run.returncode == 0, run.stderr
    config = (tmp_path / "q.required_operators.config").read_text()
    assert "QuantizeLinear" in config or "QLinearConv" in config
    x = np.load(MODELS / "digits_eval.npz")["input"][:16]
    a, b = _outputs(tmp_path / "q.onnx", x), _outputs(tmp_path / "q.ort", x)
    assert np.argmax(a, 1).tolist() == np.argmax(b, 1).tolist()
    assert np.abs(a - b).max() <= 1e-2 * np.abs(a).max()


def test_ort_output_never_replaces_the_input(tmp_path):
    model = tmp_path / "slim.ort"  # an ONNX model that happens to have the name the .ort would get
    model.write_bytes((MODELS / "digits_resnet_folded.onnx").read_bytes())
    run = _run([model, "slim.onnx", "--ort-format", "--no-validate"], tmp_path)
    assert run.returncode == 2 and run.stderr.count("\n") == 1
    assert "refusing to overwrite" in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slim.ort"]
    assert model.read_bytes() == (MODELS / "digits_resnet_folded.onnx").read_bytes()
