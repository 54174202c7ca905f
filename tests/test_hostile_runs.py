"""Issue 15, the fuzzer's last findings: nothing reaches onnxruntime before onnx's shape inference at the
run shapes says it fits the memory budget and puts no convolution or pooling window on an empty axis. The
shape search, the fold after the rewrite rules, validation, the pipeline's passes and the ORT-format check
are each guarded; the CLI cases run as processes (forked by tests/cli_fork.py) under a 2 GB address-space limit (onnxruntime's
allocator logs its failures on stderr, so "every stderr line is ours" means it never tried)."""
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

import hostile_models as H
from cli_fork import run_cli
from onnxslim import SlimError, budget, runcheck, runshapes

RUN = ["in.onnx", "out.onnx", "-q", "--no-latency"]
GB = 2**30


def _run(folder: Path, args, mem_bytes=2 * GB):
    """Exit code (negative: a signal), stderr lines and peak RSS (bytes) of a CLI run under RLIMIT_AS."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ONNXSLIM_DEBUG", None)
    proc = run_cli(args, cwd=folder, env=env, mem_bytes=mem_bytes)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return proc.returncode, lines, proc.maxrss


NETWORK_BOMBS = {  # the three fuzz findings of the second run (seed 1)
    "mobilenetv2_cos": ("mobilenetv2", "ConstantOfShape", [1, 2**20, 2**20]),
    "yolo_neck_cos": ("yolo_neck", "ConstantOfShape", [1, 2**20, 2**20]),
    "transformer_expand": ("transformer", "Expand", [30000, 30000]),
    "squeezenet_computed": ("squeezenet", "computed", None),  # ConstantOfShape(Shape(input) * 4096)
}


@pytest.mark.parametrize("name", list(NETWORK_BOMBS))
def test_inspect_never_runs_a_bomb_in_a_network(tmp_path, name):
    """inspect counts MACs without running the bomb: the shape search refuses every size from the inferred
    shapes, and the fold after the rewrite rules keeps the size threshold."""
    H.save(H.bomb_in_network(*NETWORK_BOMBS[name]), tmp_path)
    rc, lines, peak = _run(tmp_path, ["inspect", "in.onnx"])
    assert rc == 0, lines
    assert all(line.startswith("onnxslim: ") for line in lines), lines  # no onnxruntime allocator log
    assert peak < 1 * GB, f"peak RSS {peak / GB:.2f} GB"


@pytest.mark.parametrize("command", ["inspect", "no_validate"])
def test_the_old_opset_reshape_probe_never_runs_a_bomb(tmp_path, command):
    """Below opset 15 the static-Reshape step folds a probe graph with onnx-graphsurgeon, whose size
    threshold is checked on the tensors it returns, not on the ones it computes: generators are cut out."""
    H.old_opset_reshape_bomb(tmp_path)
    rc, lines, peak = _run(tmp_path, ["inspect", "in.onnx"] if command == "inspect" else RUN + ["--no-validate"])
    assert rc == 0 and all(line.startswith("onnxslim: ") for line in lines), lines
    assert peak < 1 * GB
    if command == "no_validate":  # the Reshape to [N, -1] of an [N, 4] tensor is gone, the bomb left as its op
        ops = [n.op_type for n in onnx.load(str(tmp_path / "out.onnx")).graph.node]
        assert "Reshape" not in ops and "Expand" in ops


def test_optimizing_a_bomb_in_a_network_is_one_line(tmp_path):
    H.save(H.bomb_in_network("mobilenetv2", "ConstantOfShape", [1, 2**20, 2**20]), tmp_path)
    rc, lines, _ = _run(tmp_path, RUN + ["--prune", "0.3"])
    assert rc == 2 and lines[-1].startswith("onnxslim: error:") and "4.0 TB" in lines[-1], lines
    assert all(line.startswith("onnxslim: ") for line in lines), lines
    assert not (tmp_path / "out.onnx").exists()


def test_an_input_too_small_for_the_network_is_one_line_not_a_signal(tmp_path):
    """squeezenet with input height 3: the first MaxPool's window no longer fits (output height 0) and
    onnxruntime died of SIGFPE further on; refused from the inferred shapes, naming the node."""
    H.save(H.input_dim("squeezenet", 2, 3), tmp_path)
    rc, lines, _ = _run(tmp_path, RUN + ["--prune", "0.3"])
    assert rc == 2, lines
    assert "cannot run on inputs input:1,3,3,32" in lines[-1] and "MaxPool" in lines[-1], lines
    assert all(line.startswith("onnxslim: ") for line in lines), lines
    assert not (tmp_path / "out.onnx").exists()
    rc, lines, _ = _run(tmp_path, ["inspect", "in.onnx"])
    assert rc == 0 and all(line.startswith("onnxslim: ") for line in lines), lines


def test_the_ort_format_check_never_runs_a_bomb(tmp_path):
    """--no-validate leaves the bomb as its op; --ort-format would run it to compare the .ort: refused."""
    H.expand_bomb(tmp_path)
    rc, lines, _ = _run(tmp_path, RUN + ["--no-validate", "--ort-format"])
    assert rc == 2 and "can spare" in lines[-1], lines
    assert all(line.startswith("onnxslim: ") for line in lines), lines
    assert not any(p.suffix in (".onnx", ".ort") and p.name != "in.onnx" for p in tmp_path.iterdir())


# -- in-process: the guards themselves --------------------------------------------------------------------

@pytest.fixture
def two_gb(monkeypatch):
    monkeypatch.setattr(budget, "available_bytes", lambda: 2 * GB)  # "too big" the same on every machine


@pytest.fixture
def no_onnxruntime(monkeypatch):
    import onnxruntime

    def refuse(*args, **kwargs):
        raise AssertionError("an onnxruntime session was created")
    monkeypatch.setattr(onnxruntime, "InferenceSession", refuse)


def test_the_shape_search_refuses_a_bomb_without_a_session(two_gb, no_onnxruntime):
    model = H.bomb_in_network("transformer", "Expand", [30000, 30000])
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "sequence"  # a dim the search must size
    run = runshapes.choose(model)
    assert run.shapes is None and run.tried == 0
    assert "running the model on inputs input:1,1,64 would take 3.4 GB" in run.reason


def _conv(height: int) -> onnx.ModelProto:
    w = onnx.numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w")
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 1, height, 8])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv3x3")], "g", [x], [y], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_a_window_on_an_empty_axis_is_named():
    with pytest.raises(SlimError, match=r"cannot run on inputs x:1,1,2,8: node 'conv3x3' \(Conv\): input 1x1x2x8, "
                                        r"output 1x2x0x6 has an empty spatial axis"):
        runcheck.check_run(_conv(2), {"x": (1, 1, 2, 8)}, 0, "x:1,1,2,8")
    runcheck.check_run(_conv(3), {"x": (1, 1, 3, 8)}, 0, "x:1,1,3,8")  # output 1x2x1x6: runs


def test_compare_models_checks_before_a_session(tmp_path, two_gb, no_onnxruntime):
    from onnxslim.validate import compare_models
    model = onnx.load(str(H.expand_bomb(tmp_path)))
    with pytest.raises(SlimError, match="would take 3.4 GB"):
        compare_models(model, model, [{"x": np.ones((1, 1), np.float32)}], latency=False)


def test_a_bomb_sized_from_the_input_shape_is_refused(two_gb):
    """ConstantOfShape(Shape(input) * 4096): only shape inference's data propagation knows its size."""
    model = H.bomb_in_network("squeezenet", "computed", None)
    with pytest.raises(SlimError, match="running the model on inputs input:1,3,32,32 would take 3145728.0 TB"):
        runcheck.check_run(model, {"input": (1, 3, 32, 32)}, 0, "input:1,3,32,32")
