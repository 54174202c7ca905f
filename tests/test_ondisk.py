"""Weights left on disk (onnxslim.ondisk): a model with external data is loaded with its large tensors as
checked references, cleaned up without reading them, validated by onnxruntime reading the input's own data
file, and saved by copying the data file to file; the output is self-contained and computes the same."""
import hashlib
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxslim import graph, ondisk, runtime
from onnxslim.errors import SlimError
from onnxslim.passes import cleanup

N = 96  # 9216 elements: above light.SMALL_TENSOR, so left on disk


def _model(folder, location="in.weights"):
    """x -> MatMul w1 -> Mul by ones (cleanup removes it) -> Add b -> Relu -> MatMul w2; w1, w2 in the data file."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((N, N)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((N, N)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.ones(N, np.float32), "ones"),
             numpy_helper.from_array(rng.standard_normal(N).astype(np.float32), "b")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"), helper.make_node("Mul", ["h", "ones"], ["m"], name="mul"),
             helper.make_node("Add", ["m", "b"], ["s"], name="add"), helper.make_node("Relu", ["s"], ["a"], name="act"),
             helper.make_node("MatMul", ["a", "w2"], ["y"], name="fc2")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", N])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", N])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "in.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location, size_threshold=1024)
    return path


def _outputs(path, x):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_lazy_load_keeps_large_tensors_on_disk(tmp_path):
    path = _model(tmp_path)
    model = graph.load_model(path, lazy=True)
    assert sorted(t.name for t in ondisk.lazy_tensors(model)) == ["w1", "w2"]
    w1 = next(t for t in model.graph.initializer if t.name == "w1")
    eager = {t.name: numpy_helper.to_array(t) for t in graph.load_model(path).graph.initializer}
    np.testing.assert_array_equal(ondisk.read_array(w1), eager["w1"])
    # its size with the data counted unread (the eager load also writes data_location DEFAULT: 2 bytes a tensor)
    assert graph.model_bytes(graph.load_model(path)) - graph.model_bytes(model) == 2 * 2


def test_cleanup_leaves_unchanged_weights_on_disk(tmp_path):
    model = graph.load_model(_model(tmp_path), lazy=True)
    out = cleanup.run(model).model
    assert "Mul" not in [n.op_type for n in out.graph.node]  # the rules ran (Mul by ones removed)
    assert sorted(t.name for t in ondisk.lazy_tensors(out)) == ["w1", "w2"]  # and read no weight into the proto
    x = np.random.default_rng(1).standard_normal((3, N)).astype(np.float32)
    ref = _outputs(tmp_path / "in.onnx", x)
    sess = runtime.session(out)  # reads w1, w2 from in.weights itself
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], ref, rtol=1e-5, atol=1e-5)


def test_lazy_load_refuses_data_outside_the_folder_and_truncated_data(tmp_path):
    inner = tmp_path / "m"
    inner.mkdir()
    path = _model(inner)
    model = onnx.load(str(path), load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../in.weights"
    (tmp_path / "in.weights").write_bytes((inner / "in.weights").read_bytes())
    onnx.save(model, str(inner / "escape.onnx"))
    with pytest.raises(SlimError, match="outside the model's folder"):
        graph.load_model(inner / "escape.onnx", lazy=True)
    data = (inner / "in.weights").read_bytes()
    (inner / "in.weights").write_bytes(data[: len(data) // 2])
    with pytest.raises(SlimError, match="truncated"):
        graph.load_model(path, lazy=True)


def test_checker_still_refuses_a_broken_model_with_lazy_tensors(tmp_path):
    model = graph.load_model(_model(tmp_path), lazy=True)
    model.graph.node[0].input[1] = "nowhere"
    with pytest.raises(onnx.checker.ValidationError):
        ondisk.check_onnx(model)


def test_bare_cli_output_is_self_contained_and_equal(tmp_path):
    path = _model(tmp_path)
    before = _digest(tmp_path)
    out = tmp_path / "out" / "slim.onnx"
    proc = subprocess.run([sys.executable, "-m", "onnxslim.cli", str(path), str(out), "--input-shape", "x:2,96",
                           "--no-latency", "-q"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert _digest(tmp_path) == before  # the input and its data untouched
    saved = onnx.load(str(out), load_external_data=False)
    locations = {e.value for t in saved.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"slim.onnx.data"}  # relative, its own file
    x = np.random.default_rng(2).standard_normal((2, N)).astype(np.float32)
    ref = _outputs(path, x)
    (tmp_path / "in.weights").unlink()  # the output must not read the input's data
    np.testing.assert_allclose(_outputs(out, x), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("configs", [{"prune": "ratio"}, {"quantize": "int4"}])
def test_prune_and_int4_on_disk_equal_the_in_memory_run(tmp_path, configs):
    """Pruning and weight-only quantization take the model with its weights on disk (Pass.weights_on_disk):
    the result computes exactly what the run on the fully loaded model computes; untouched weights stay
    references."""
    from onnxslim import pipeline
    from onnxslim.passes.prune.config import PruneConfig
    from onnxslim.passes.quantize import QuantizeConfig
    from onnxslim.progress import silent

    path = _model(tmp_path)
    kwargs = ({"prune": PruneConfig(ratio=0.25)} if "prune" in configs
              else {"quantize": QuantizeConfig(mode="int4", min_elements=1024)})
    run = dict(validate=False, progress=silent, input_shapes={"x": [2, N]}, **kwargs)
    eager = pipeline.optimize(graph.load_model(path), **run).model
    lazy_in = graph.load_model(path, lazy=True)
    lazy = pipeline.optimize(lazy_in, **run).model
    assert len(ondisk.lazy_tensors(lazy_in)) == 2  # not read into the caller's model
    x = np.random.default_rng(3).standard_normal((2, N)).astype(np.float32)
    want = runtime.session(eager).run(None, {"x": x})[0]
    np.testing.assert_array_equal(runtime.session(lazy).run(None, {"x": x})[0], want)
    assert graph.model_bytes(lazy) < graph.model_bytes(lazy_in)


@pytest.mark.parametrize("args", [[], ["--prune", "0.3"], ["--quantize", "int4"]])
def test_cli_on_a_decoder_with_external_data(tmp_path, args):
    """The tiny decoder of models/build_decoder.py written with external data: every command writes a model
    onnxruntime runs from its own data file; the bare one computes the same logits, pruning keeps the
    (unread) embeddings and the attention weights it only read for importance unchanged."""
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "models"))
    import build_decoder

    spec = build_decoder.Spec(layers=2, hidden=64, heads=4, ffn=256, vocab=512, max_seq=32)
    path = build_decoder.save(spec, tmp_path / "dec.onnx", external=True)
    out = tmp_path / "out.onnx"
    proc = subprocess.run([sys.executable, "-m", "onnxslim.cli", str(path), str(out), "--input-shape", "input_ids:1,16",
                           "--no-latency", "-q", *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ids = {"input_ids": np.random.default_rng(4).integers(0, 512, (1, 16)).astype(np.int64)}
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, ids)[0]
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, ids)[0]
    assert got.shape == want.shape
    if not args:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    saved = {t.name: t for t in onnx.load(str(out)).graph.initializer}
    original = {t.name: t for t in onnx.load(str(path)).graph.initializer}
    for name in ("tok_embed", "lm_head.weight") if "--prune" in args else ():
        np.testing.assert_array_equal(numpy_helper.to_array(saved[name]), numpy_helper.to_array(original[name]))
