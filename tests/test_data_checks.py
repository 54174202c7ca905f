"""Issue 11's preprocessing trap: the scale follows the mean/std, defaults are shown and recorded, and
degenerate data (near-constant samples, values the first layer never saw, one predicted class) stops the
run with one line or warns."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from cli_fork import run_cli

from onnxslim.calibration import ArrayDataset, Preprocess, load_calibration
from onnxslim.datacheck import check_data
from onnxslim.errors import SlimError
from onnxslim.pipeline import optimize
from onnxslim.progress import silent

CLI = [sys.executable, "-m", "onnxslim.cli"]


def classifier(first="conv", bias_class=None, classes=10) -> onnx.ModelProto:
    """x [N,3,8,8] -> (BatchNormalization ->) Conv 3x3 -> Relu -> GlobalAveragePool -> Gemm -> logits."""
    rng = np.random.default_rng(1)
    inits = [numpy_helper.from_array(rng.standard_normal((6, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(np.zeros(6, np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal((classes, 6)).astype(np.float32), "fc"),
             numpy_helper.from_array(np.zeros(classes, np.float32) if bias_class is None else
                                     np.eye(classes, dtype=np.float32)[bias_class] * 1e3, "fcb")]
    nodes, x = [], "x"
    if first == "bn":
        for name, value in (("g", 1.0), ("beta", 0.0), ("mu", 0.0), ("var", 1.0)):
            inits.append(numpy_helper.from_array(np.full(3, value, np.float32), name))
        nodes.append(helper.make_node("BatchNormalization", ["x", "g", "beta", "mu", "var"], ["xn"], name="bn"))
        x = "xn"
    nodes += [helper.make_node("Conv", [x, "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c"], ["r"], name="relu"),
              helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
              helper.make_node("Flatten", ["p"], ["f"], name="flat"),
              helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def write_images(folder, count=32, seed=0):
    """Photos stand-in: each image its own colour plus texture, so a classifier sees different inputs."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        base = rng.integers(0, 256, size=3)
        arr = np.clip(base + rng.normal(0, 40, size=(10, 10, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"img{i:02d}.png")
    return folder


# -- the scale -------------------------------------------------------------------------------------------

def test_scale_follows_a_mean_or_std_on_the_255_scale():
    shape = (1, 3, 8, 8)
    assert Preprocess(mean=(127,), std=(128,)).resolved(shape).scale == 1.0
    assert Preprocess(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)).resolved(shape).scale == pytest.approx(1 / 255)
    assert Preprocess().resolved(shape).scale == pytest.approx(1 / 255)
    given = Preprocess(mean=(127,), std=(128,), scale=1 / 255)  # explicit: the user's word wins
    assert given.resolved(shape).scale == pytest.approx(1 / 255)
    assert Preprocess(mean=(127,), std=(128,)).describe()["scale_from"].startswith("0..255")
    assert given.describe()["scale_from"] == "given"


@pytest.mark.slow
def test_help_shows_every_preprocessing_default():
    out = subprocess.run(CLI + ["optimize", "--help"], capture_output=True, text=True, timeout=60).stdout
    flat = " ".join(out.split())
    for fragment in ("1/255", "crop x 256/224", "the model's input size", "from the model's input shape",
                     "[default: 64]", "structure check, not accuracy", "l1 and reconstruction",
                     "auto", "~3 plan builds", "Default: auto with --calib data (16+ samples) and a target, else l1"):
        assert fragment in flat, fragment


def test_report_records_the_preprocessing_used(tmp_path):
    folder = write_images(tmp_path / "imgs", 16)
    data = load_calibration(str(folder), classifier(), preprocess=Preprocess(mean=(127,), std=(128,)))
    report = optimize(classifier(), calibration=data, validate=False, progress=silent).report
    pre = report["calibration"]["preprocess"]
    assert pre["scale"] == 1.0 and pre["mean"] == [127.0] and pre["crop"] == 8 and pre["resize"] == 9
    assert pre["scale_from"].startswith("0..255")


# -- the checks ------------------------------------------------------------------------------------------

def test_the_trap_stops_with_one_line_and_writes_nothing(tmp_path):
    folder = write_images(tmp_path / "imgs", 16)
    model = tmp_path / "m.onnx"
    onnx.save(classifier(), str(model))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    trap = ["--mean", "127", "--std", "128", "--scale", str(1 / 255)]
    proc = run_cli([model, tmp_path / "out.onnx", "--prune", "0.25", "--calib", folder, *trap], cwd=tmp_path, env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("onnxslim: error: --calib") and "near-constant" in lines[0] and "--scale" in lines[0]
    assert not (tmp_path / "out.onnx").exists()
    # without --scale the same mean/std mean 0..255 values: the run goes through
    ok = run_cli([model, tmp_path / "out.onnx", "--prune", "0.25", "--calib", folder, "--mean", "127", "--std", "128",
                  "--no-latency", "-q"], cwd=tmp_path, env=env)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "out.onnx").exists()


def test_near_constant_arrays_stop():
    x = np.full((16, 3, 8, 8), -0.99, np.float32) + np.random.default_rng(0).normal(0, 1e-3, (16, 3, 8, 8)).astype(np.float32)
    with pytest.raises(SlimError, match="16 of 16 samples are near-constant"):
        check_data(classifier(), ArrayDataset({"x": x}, "x.npy"))


def test_good_data_passes_without_warnings(tmp_path):
    folder = write_images(tmp_path / "imgs", 32)
    assert check_data(classifier(), load_calibration(str(folder), classifier())) == []


def test_one_predicted_class_stops_unless_the_labels_say_one_class(tmp_path):
    folder = write_images(tmp_path / "imgs", 16)
    biased = classifier(bias_class=3)
    with pytest.raises(SlimError, match="predicts class 3 for 16 of 16 samples"):
        check_data(biased, load_calibration(str(folder), biased))
    one_class = tmp_path / "by_class"
    write_images(one_class / "3", 16)  # one sub-folder: the user says every sample is class 3
    assert check_data(biased, load_calibration(str(one_class), biased)) == []


def test_raw_pixels_into_a_conv_warn(tmp_path):
    folder = write_images(tmp_path / "imgs", 16)
    data = load_calibration(str(folder), classifier(), preprocess=Preprocess(scale=1.0))  # 0..255 values
    warnings = check_data(classifier(), data)
    assert len(warnings) == 1 and "first layer (Conv 'conv')" in warnings[0] and "0..255" in warnings[0]


def test_batchnorm_first_layer_knows_its_input_statistics(tmp_path):
    model = classifier(first="bn")  # trained on mean 0, std 1
    rng = np.random.default_rng(0)  # per-sample offsets, so that the classifier's answers differ
    x = (0.8 * rng.normal(0, 1, (16, 3, 1, 1)) + 0.6 * rng.normal(0, 1, (16, 3, 8, 8))).astype(np.float32)
    assert check_data(model, ArrayDataset({"x": x}, "x.npy")) == []
    with pytest.raises(SlimError, match="BatchNormalization 'bn'"):
        check_data(model, ArrayDataset({"x": x + 20}, "x.npy"))


def test_a_fixed_batch_of_one_still_checks_32_samples():
    model = classifier()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 1
    x = np.full((40, 3, 8, 8), 0.5, np.float32)
    with pytest.raises(SlimError, match="32 of 32 samples are near-constant"):
        check_data(model, ArrayDataset({"x": x}, "x.npy", fixed_batch=1))


def test_one_predicted_class_on_user_arrays_warns_instead():
    # arrays the user prepared (not our image preprocessing): the same share is a warning, not a stop
    biased = classifier(bias_class=3)
    x = np.random.default_rng(0).normal(size=(16, 3, 8, 8)).astype(np.float32)
    warnings = check_data(biased, ArrayDataset({"x": x}, "arrays", None, None))
    assert len(warnings) == 1 and "predicts class 3 for 16 of 16 samples" in warnings[0]
