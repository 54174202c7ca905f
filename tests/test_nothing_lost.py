"""Nothing lost: a CLI run stopped while it writes (SIGTERM, SIGKILL, an interrupt between the data file's and
the model's rename) leaves no partial output, an existing output as it was and the input untouched, for
models whose weights live in an external data file.

Each run is a real `onnxslim` process; a small hook installed before the CLI starts stops it at the chosen
point of `graph.save_model` (the >2 GB threshold is lowered so a small model takes the external-data path)."""
import hashlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

HOOK = textwrap.dedent("""
    import os, signal, sys, time
    import onnxslim.graph as g
    when, how = sys.argv.pop(1), sys.argv.pop(1)
    g.TWO_GB = 1000  # the external-data path without writing 2 GB
    sig = getattr(signal, how)

    def stop():
        os.kill(os.getpid(), sig)
        time.sleep(2)  # the signal lands here (SIGTERM raises, SIGKILL ends the process)

    if when == "writing":  # halfway through the weights
        real = g.ExternalWriter.__call__
        seen = []
        def call(self, tensor):
            seen.append(tensor.name)
            if len(seen) == 2:
                stop()
            return real(self, tensor)
        g.ExternalWriter.__call__ = call
    elif when == "between":  # the data file is in place, the model not yet
        real_replace = os.replace
        count = []
        def replace(src, dst):
            count.append(dst)
            if len(count) == 2 and not str(src).endswith(".old.tmp") and ".old." not in str(src):
                stop()
            return real_replace(src, dst)
        g.os.replace = replace
    from onnxslim.cli import main
    sys.argv[0] = "onnxslim"
    main()
""")


def _external_model(folder, seed=0, n=96):
    rng = np.random.default_rng(seed)
    w1 = numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"), helper.make_node("Relu", ["h"], ["a"], name="act"),
             helper.make_node("MatMul", ["a", "w2"], ["y"], name="fc2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "in.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="in.weights", size_threshold=0)
    return path


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _run(args, when="none", how="SIGTERM", tmpdir=None):
    env = {**os.environ, **({"TMPDIR": str(tmpdir)} if tmpdir else {})}  # where the pruned weights are spilled
    return subprocess.run([sys.executable, "-c", HOOK, when, how, *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture
def folder(tmp_path):
    _external_model(tmp_path)
    return tmp_path


def _prune_args(folder, out):
    return [folder / "in.onnx", out, "--prune", "0.25", "--no-validate", "-q"]


@pytest.mark.slow
def test_external_data_output_when_nothing_stops_it(folder, tmp_path_factory):
    scratch = tmp_path_factory.mktemp("scratch")
    proc = _run(_prune_args(folder, folder / "out.onnx"), tmpdir=scratch)
    assert proc.returncode == 0, proc.stderr
    assert sorted(_digest(folder)) == ["in.onnx", "in.weights", "out.onnx", "out.onnx.data"]
    assert not list(scratch.iterdir())  # the temp file of the pruned weights (ondisk.spill) is gone


def _bare_args(folder, out):  # the weights stay on disk and are copied file to file (onnxslim.ondisk)
    return [folder / "in.onnx", out, "--no-validate", "-q"]


@pytest.mark.slow
@pytest.mark.parametrize("when", ["writing", "between"])
@pytest.mark.parametrize("existing", [False, True])
@pytest.mark.parametrize("command", ["prune", "bare"])
def test_sigterm_while_writing_leaves_no_partial_output(folder, when, existing, command, tmp_path_factory):
    args = _prune_args if command == "prune" else _bare_args
    scratch = tmp_path_factory.mktemp("scratch")
    if existing:  # an earlier output (model + data) that must survive the stopped run byte for byte
        first = _run(args(folder, folder / "out.onnx") + (["--prune", "0.5"] if command == "bare" else []), tmpdir=scratch)
        assert first.returncode == 0, first.stderr
    before = _digest(folder)
    proc = _run(args(folder, folder / "out.onnx") + (["--prune", "0.5"] if command == "prune" else []), when=when,
                tmpdir=scratch)
    assert proc.returncode == 130 and "interrupted; nothing written" in proc.stderr, proc.stderr
    assert _digest(folder) == before  # input untouched, no temp files, old output (if any) as it was
    assert not list(scratch.iterdir())  # nor the pruned weights' temp file (ondisk.spill) where it was spilled
    if existing:
        back = onnx.load(str(folder / "out.onnx"))  # still loads with its own data
        assert all(t.name for t in back.graph.initializer)


@pytest.mark.slow
def test_sigkill_while_writing_never_exposes_a_partial_output(folder, tmp_path_factory):
    """A SIGKILL cannot be cleaned up after: the hidden temp files stay (and the pruned weights' temp file,
    kept out of the system's temp folder here), but no output path holds a partial model and the input is
    untouched."""
    scratch = tmp_path_factory.mktemp("scratch")
    first = _run(_prune_args(folder, folder / "out.onnx"), tmpdir=scratch)
    assert first.returncode == 0, first.stderr
    before = _digest(folder)
    proc = _run(_prune_args(folder, folder / "out.onnx") + ["--prune", "0.5"], when="writing", how="SIGKILL", tmpdir=scratch)
    assert proc.returncode == -9
    after = _digest(folder)
    assert {k: v for k, v in after.items() if not k.startswith(".")} == before
    assert all(k.endswith(".tmp") for k in after if k.startswith("."))
