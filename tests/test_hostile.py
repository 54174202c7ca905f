"""Issue 15: hostile and invalid models are refused with one line and exit 2, in bounded memory; external
data of every kind is read from the model's folder only. The CLI cases run as processes forked from a server
that imported the CLI once (tests/cli_fork.py; two at a time, started by a module fixture), the test that
traces every file the CLI opens as a real subprocess under strace, the loader cases in-process."""
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import hostile_models as H
from cli_fork import run_cli
from onnxslim import SlimError, graph

CLI = [sys.executable, "-m", "onnxslim.cli"]
RUN = ["in.onnx", "out.onnx", "-q", "--no-latency"]
GB = 2**30
# strace stops the process only at the traced syscalls (strace >= 5.3): about a third less CPU
SECCOMP = ["--seccomp-bpf"] if shutil.which("strace") and subprocess.run(
    ["strace", "--seccomp-bpf", "-f", "-qq", "-e", "trace=openat", "-o", os.devnull, "true"], capture_output=True).returncode == 0 else []


def _nan_calib(folder):
    np.savez(Path(folder) / "c.npz", input=np.full((16, 1, 8, 8), np.nan, np.float32))
    return H.save(H.digits(), folder)


def _rank3_input(folder):
    m = H.digits()
    del m.graph.input[0].type.tensor_type.shape.dim[-1]
    return H.save(m, folder)


def _gather_axis(folder):
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 3])
    idx = numpy_helper.from_array(np.array([0], np.int64), "idx")
    g = onnx.helper.make_graph([onnx.helper.make_node("Gather", ["x", "idx"], ["y"], name="gather", axis=5)], "g", [x], [y], [idx])
    return H.save(onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=9), folder)


# name: (builder, arguments, exit code, fragment of the one error line)
CASES = {
    "strides_zero": (H.conv_attr("strides", [0, 0]), RUN, 2, "strides"),
    "strides_zero_inspect": (H.conv_attr("strides", [0, 0]), ["inspect", "in.onnx"], 2, "strides"),
    "pads_wrong_length": (H.conv_attr("pads", [1, 1]), RUN + ["--prune", "0.3"], 2, "pads"),
    "kernel_wrong_length": (H.conv_attr("kernel_shape", [3]), RUN, 2, "kernel_shape"),
    "dilations_zero": (H.conv_attr("dilations", [0, 0]), RUN, 2, "dilations"),
    "group_not_dividing": (H.conv_attr("group", 3), RUN + ["--quantize", "int8-dynamic"], 2, "group 3"),
    "group_not_dividing_inspect": (H.conv_attr("group", 3), ["inspect", "in.onnx"], 2, "group 3"),
    "group_mismatch_channels": (H.conv_attr("group", 2), RUN + ["--quantize", "int8-dynamic"], 2, "channels"),
    "weight_wrong_rank": (H.tensor_edit("onnx::Conv_84", dims=[32, 32, 9]), RUN + ["--quantize", "int8-dynamic"], 2, "rank"),
    "bias_wrong_length": (H.replace_init("onnx::Conv_85", np.zeros(31, np.float32)), RUN + ["--quantize", "int8-dynamic"], 2, "bias"),
    "input_wrong_rank": (_rank3_input, RUN, 2, "has rank 3, 4 expected"),
    "kernel_not_weight": (H.replace_init("onnx::Conv_84", np.zeros((32, 32, 3, 2), np.float32)), RUN, 2, "kernel_shape [3, 3] does not match"),
    "gather_axis_out_of_range": (_gather_axis, ["inspect", "in.onnx"], 2, "axis 5 is out of range"),
    "data_type_99": (H.tensor_edit("onnx::Conv_85", data_type=99), RUN, 2, "unknown element type 99"),
    "dims_lie_inspect": (H.tensor_edit("onnx::Conv_84", dims=[2**31, 2**31, 1, 1]), ["inspect", "in.onnx"], 2, "holds 36864 bytes"),
    "dims_not_data": (H.tensor_edit("onnx::Conv_84", dims=[32, 32, 3, 4]), RUN + ["--prune", "0.3"], 2, "onnx::Conv_84"),
    "dtype_not_data": (H.tensor_edit("onnx::Conv_84", data_type=onnx.TensorProto.DOUBLE), RUN + ["--prune", "0.3"], 2, "DOUBLE"),
    "bn_scale_short": (H.bn_param(1, short=True), RUN, 2, "BatchNormalization"),
    "gemm_bias_short": (H.replace_init("fc.bias", np.zeros(9, np.float32)), RUN + ["--prune", "0.3"], 2,
                        "'fc.bias' has shape [9]; it does not broadcast to ['?', 10]"),
    "layernorm_scale_wrong": (H.transformer_layernorm_scale([0, 1]), RUN + ["--prune", "0.3"], 2,
                              "'layers.1.ln1.weight' has shape [0, 1]; it does not broadcast to [64]"),
    "optional_input_inspect": (H.optional_input, ["inspect", "in.onnx"], 2, "optional"),
    "input_shape_too_big": (H.conv_attr("group", 1), RUN + ["--input-shape", "input:1000000,1,8,8"], 2, "can spare"),
    "input_shape_beyond_int64": (H.conv_attr("group", 1), RUN + ["--input-shape", "input:99999999999999999999,1,8,8"], 2, "2**63"),
    "seed_negative": (H.conv_attr("group", 1), RUN + ["--seed", "-1"], 2, "--seed"),
    "min_cosine_nan": (H.conv_attr("group", 1), RUN + ["--min-cosine", "nan"], 2, "--min-cosine"),
    "nul_in_location": (lambda f: H.write_external(f, "initializer", "w\0.bin"), RUN, 2, "invalid location"),
}
# valid models with odd values: exit 0, our one-line warning, no numpy warning text
WARN_CASES = {
    "bn_variance_negative": (H.bn_param(4, values=[-1.0, -2.0]), RUN, "variance + epsilon <= 0 for 2 channel(s)"),
    "inf_weights": (H.replace_init("onnx::Conv_84", np.full((32, 32, 3, 3), np.inf, np.float32)), RUN + ["--prune", "0.3"], "NaN or Inf"),
    "nan_calibration": (_nan_calib, RUN + ["--prune", "0.3", "--calib", "c.npz"], "1024 NaN/Inf"),
}


def _run(folder: Path, args, timeout=120):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ONNXSLIM_DEBUG", None)
    # the memory budget reads RLIMIT_AS: a fixed limit makes "too big" mean the same on every machine
    return run_cli(args, cwd=folder, env=env, timeout=timeout, mem_bytes=3 * GB)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    jobs = {}
    for name, (build, args, *_) in {**CASES, **WARN_CASES}.items():
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        jobs[name] = (folder, (folder / "in.onnx").read_bytes(), args)
    with ThreadPoolExecutor(2) as pool:
        done = dict(zip(jobs, pool.map(lambda j: _run(j[0], j[2]), jobs.values())))
    return {name: (jobs[name][0], jobs[name][1], proc) for name, proc in done.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_invalid_model_is_one_line_exit_2(results, name):
    folder, before, proc = results[name]
    _, _, code, fragment = CASES[name]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("onnxslim: error:")]
    assert proc.returncode == code, proc.stderr
    assert len(errors) == 1 and fragment in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and "Warning:" not in proc.stderr
    assert not (folder / "out.onnx").exists()
    assert (folder / "in.onnx").read_bytes() == before


@pytest.mark.parametrize("name", list(WARN_CASES))
def test_odd_values_warn_in_one_line(results, name):
    folder, before, proc = results[name]
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if WARN_CASES[name][2] in line]
    assert len(warned) == 1 and warned[0].startswith("onnxslim: warning:"), proc.stderr
    # numpy's own RuntimeWarning lines (file:line: RuntimeWarning: ... and the source excerpt) never leak
    assert "RuntimeWarning" not in proc.stderr and "Traceback" not in proc.stderr
    assert all(line.startswith("onnxslim: ") for line in proc.stderr.splitlines()), proc.stderr
    assert onnx.load(str(folder / "out.onnx")).graph.node
    assert (folder / "in.onnx").read_bytes() == before


# -- external data of every kind -----------------------------------------------------------------------------

def _values(model: onnx.ModelProto) -> np.ndarray:
    """y = x + c evaluated at x = 0 in onnxruntime: the c the model holds."""
    import onnxruntime as ort
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": np.zeros(4, np.float32)})[0]


@pytest.mark.parametrize("kind", H.EXTERNAL_KINDS)
def test_external_data_of_every_kind_is_read_from_the_models_folder(tmp_path, monkeypatch, kind):
    model_dir, cwd = tmp_path / "model", tmp_path / "cwd"
    model_dir.mkdir()
    cwd.mkdir()
    path = H.write_external(model_dir, kind, "w.bin")
    (cwd / "w.bin").write_bytes(np.full(4, 99.0, np.float32).tobytes())  # a decoy the CWD offers
    monkeypatch.chdir(cwd)
    model = graph.load_model(path)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.external.all_tensors(model))
    np.testing.assert_array_equal(_values(model), H.C_VALUES)


@pytest.mark.parametrize("kind", H.EXTERNAL_KINDS)
def test_external_data_only_in_the_cwd_is_not_read(tmp_path, monkeypatch, kind):
    model_dir, cwd = tmp_path / "model", tmp_path / "cwd"
    model_dir.mkdir()
    cwd.mkdir()
    path = H.write_external(model_dir, kind, "cwd_secret.bin", data_in_folder=False)
    secret = cwd / "cwd_secret.bin"
    secret.write_bytes(H.external_bytes(kind))
    secret.chmod(0)  # a read attempt would fail differently (PermissionError) from the refusal we expect
    monkeypatch.chdir(cwd)
    with pytest.raises(SlimError, match="cwd_secret.bin.*missing"):
        graph.load_model(path)


@pytest.mark.parametrize("kind", H.EXTERNAL_KINDS)
@pytest.mark.parametrize("where", ["parent", "absolute", "symlink", "nul"])
def test_external_data_outside_the_folder_is_refused(tmp_path, kind, where):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    outside = tmp_path / "outside.bin"
    outside.write_bytes(H.external_bytes(kind))
    location = {"parent": "../outside.bin", "absolute": str(outside), "symlink": "link.bin", "nul": "w.bin\0x"}[where]
    if where == "symlink":
        (model_dir / "link.bin").symlink_to(outside)
    path = H.save(H.external_model(kind, location), model_dir)
    with pytest.raises(SlimError, match="outside the model's folder|invalid location") as err:
        graph.load_model(path)
    assert "\n" not in str(err.value)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed")
@pytest.mark.parametrize("kind", H.EXTERNAL_KINDS)
def test_the_cli_never_opens_a_file_in_the_cwd(tmp_path, kind):
    """The issue's finding (a sparse initializer's data read from the CWD), end to end for every kind: with
    the data beside the model and a decoy of the same name in the CWD, the run succeeds, no process of it
    opens the CWD's file, and the output holds the model folder's values."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    H.write_external(model_dir, kind, "cwd_secret.bin")
    (tmp_path / "cwd_secret.bin").write_bytes(np.full(4, 99.0, np.float32).tobytes())
    trace = tmp_path / "trace.txt"
    proc = subprocess.run(["strace", *SECCOMP, "-f", "-e", "trace=open,openat", "-o", str(trace)] + CLI +
                          ["model/in.onnx", "out.onnx", "-q", "--no-latency"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    opened = [line for line in trace.read_text().splitlines() if "cwd_secret.bin" in line]
    assert opened and all(str(model_dir) in line for line in opened), opened
    np.testing.assert_array_equal(_values(onnx.load(str(tmp_path / "out.onnx"))), H.C_VALUES)


# -- the checks in-process -----------------------------------------------------------------------------------

def test_lying_dims_are_refused_without_allocating(tmp_path):
    import resource
    path = H.tensor_edit("onnx::Conv_84", dims=[2**40, 2**40, 2**40, 1])(tmp_path)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(SlimError, match="onnx::Conv_84"):
        graph.load_model(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KB: < 200 MB more


def test_typed_data_counts_are_checked():
    from onnxslim.check import check_tensor
    t = onnx.helper.make_tensor("t", onnx.TensorProto.FLOAT, [2, 3], [1.0] * 6)
    check_tensor(t)
    del t.dims[:]
    t.dims.extend([2, 4])
    with pytest.raises(SlimError, match="8 elements"):
        check_tensor(t)
    wrong_field = onnx.helper.make_tensor("i", onnx.TensorProto.INT64, [2], [1, 2])
    wrong_field.data_type = onnx.TensorProto.FLOAT
    with pytest.raises(SlimError, match="int64_data"):
        check_tensor(wrong_field)


def test_declared_output_shapes_that_disagree_do_not_refuse_a_valid_model(tmp_path):
    """onnxruntime only warns when a declared output shape disagrees with inference: so do we (nothing)."""
    m = H.digits()
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 11
    model = graph.load_model(H.save(m, tmp_path))
    assert len(model.graph.node) == len(m.graph.node)


def test_every_shipped_model_passes_the_checks():
    for path in sorted(H.MODELS.rglob("*.onnx")):
        graph.load_model(path)


def test_random_feeds_are_checked_against_memory_first():
    from onnxslim import inputs
    with pytest.raises(SlimError, match="random inputs"):
        inputs.random_feeds(H.digits(), {"input": (10**9, 1, 8, 8)}, count=4)


def test_channel_analysis_freezes_axes_too_large_to_number(monkeypatch):
    from onnxslim import channels
    from onnxslim.passes import cleanup
    monkeypatch.setattr(channels, "MAX_SPACE", 16)  # the 32- and 64-channel axes now count as huge
    clean = cleanup.run(H.digits(), cleanup.CleanupConfig()).model
    analysis = channels.analyze(clean)
    assert not analysis.prunable_groups
    assert analysis.spaces == [] or all(s.size <= 16 for s in analysis.spaces)


# -- folding memory bombs (the folding bound itself is the lossless issue's --size-threshold) ------------------

def _peak_run(folder: Path, args, mem_bytes=2 * GB):
    """Exit code, stderr and peak RSS (bytes) of a CLI run under an address-space limit."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ONNXSLIM_DEBUG", None)
    proc = run_cli(args, cwd=folder, env=env, mem_bytes=mem_bytes)
    return proc.returncode, proc.stderr, proc.maxrss


BOMBS = {"constant_of_shape": H.constant_of_shape_bomb, "expand": H.expand_bomb}


@pytest.mark.parametrize("bomb", list(BOMBS))
def test_validation_refuses_a_bomb_before_running_it(tmp_path, bomb):
    """Validating runs the model: its 3.6-8 GB activation is refused from the inferred shapes, at once."""
    BOMBS[bomb](tmp_path)
    rc, err, peak = _peak_run(tmp_path, RUN)
    assert rc == 2 and "can spare" in err and "Traceback" not in err, err
    assert peak < 500 * 2**20 and not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("command", ["inspect", "no_validate"])
@pytest.mark.parametrize("bomb", list(BOMBS))
def test_folding_never_materializes_a_bomb(tmp_path, bomb, command):
    BOMBS[bomb](tmp_path)
    args = ["inspect", "in.onnx"] if command == "inspect" else RUN + ["--no-validate"]
    rc, err, peak = _peak_run(tmp_path, args)
    assert rc in (0, 2) and "Traceback" not in err, err
    assert all(line.startswith("onnxslim: ") for line in err.splitlines()), err  # no onnxruntime allocator log
    assert peak < 1 * GB, f"peak RSS {peak / GB:.2f} GB"
    if command == "no_validate" and rc == 0:  # the bomb is left as its op, not folded into the file
        out = onnx.load(str(tmp_path / "out.onnx"))
        assert out.ByteSize() < 10 * 2**20
        assert {"ConstantOfShape", "Expand"} & {n.op_type for n in out.graph.node}


def test_a_huge_sparse_tensor_is_not_made_dense(tmp_path):
    """A sparse initializer with one value in [10**6, 10**6] would be 4 TB dense: refused by the budget."""
    values = numpy_helper.from_array(np.array([1.0], np.float32), "c")
    sparse = onnx.helper.make_sparse_tensor(values, numpy_helper.from_array(np.array([7], np.int64), "i"), [10**6, 10**6])
    x, y = (onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [10**6, 10**6]) for n in "xy")
    g = onnx.helper.make_graph([onnx.helper.make_node("Add", ["x", "c"], ["y"])], "g", [x], [y])
    g.sparse_initializer.append(sparse)
    path = H.save(onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=9), tmp_path)
    with pytest.raises(SlimError, match="sparse tensor 'c' made dense .* can spare"):
        graph.load_model(path)


def test_a_sparse_initializer_is_loaded_dense(tmp_path):
    model = graph.load_model(H.save(H.external_model("sparse_initializer", "w.bin"), tmp_path)
                             if (tmp_path / "w.bin").write_bytes(H.C_VALUES.tobytes()) else None)
    assert not model.graph.sparse_initializer
    np.testing.assert_array_equal(_values(model), H.C_VALUES)


def test_an_onnxruntime_failure_in_the_int8_fidelity_run_is_one_line():
    from onnxslim import runtime
    from onnxslim.passes.quantize import fidelity

    class Failing:
        def run(self, names, feed):
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Conv: bad group\n at frame 2")

    with pytest.raises(SlimError, match="int8 fidelity check: .*bad group$") as err:
        runtime.run_once(Failing(), {}, what=fidelity.RUN_FAILED)
    assert err.value.exit_code == 2
