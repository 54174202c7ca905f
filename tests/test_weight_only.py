"""Weight-only quantization (`--quantize int4 / int8-weight`): MatMulNBits and GatherBlockQuantized models that
onnxruntime runs, close to the float model; exact Gemm rewrite; small layers listed; the tolerance fallback;
the packing that GatherBlockQuantized reads; a tiny decoder built by models/build_decoder.py."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxslim.calibration import ArrayDataset
from onnxslim.context import Context
from onnxslim.cost import model_cost
from onnxslim.passes.quantize import QuantizeConfig, run, weight_only
from onnxslim.progress import silent

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "models"))
import build_decoder  # noqa: E402


def mlp(seed=0, d=128, hidden=256, small=8):
    """x -> MatMul+Add -> Relu -> Gemm(transB, alpha, beta) -> Relu -> small MatMul -> y."""
    rng = np.random.default_rng(seed)
    w = lambda *s: numpy_helper.from_array((rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32))  # noqa: E731
    inits = [w(d, hidden), w(hidden, hidden), w(hidden, small), numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32))]
    for t, name in zip(inits, ["w1", "w2t", "w3", "b1"]):
        t.name = name
    inits.append(numpy_helper.from_array(rng.standard_normal(hidden).astype(np.float32), "b2"))
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"], name="fc1"),
        helper.make_node("Add", ["h1", "b1"], ["h1b"], name="fc1_bias"),
        helper.make_node("Relu", ["h1b"], ["a1"], name="act1"),
        helper.make_node("Gemm", ["a1", "w2t", "b2"], ["h2"], name="fc2", transB=1, alpha=0.5, beta=2.0),
        helper.make_node("Relu", ["h2"], ["a2"], name="act2"),
        helper.make_node("MatMul", ["a2", "w3"], ["y"], name="head"),
    ]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", d])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", small])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def infer(model, feed):
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feed)


def relative_error(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


def quantize(model, data, **kw):
    ctx = Context(calibration=ArrayDataset(data, "test"), progress=silent)
    return run(model, QuantizeConfig(measure_latency=False, **kw), ctx)


@pytest.fixture(scope="module")
def mlp_data():
    return {"x": np.random.default_rng(1).standard_normal((32, 128)).astype(np.float32)}


@pytest.mark.parametrize("mode,bits,bound", [("int4", 4, 0.15), ("int8-weight", 8, 0.01)])
def test_mlp_to_matmulnbits_outputs_close(mlp_data, mode, bits, bound):
    model = mlp()
    result = quantize(model, mlp_data, mode=mode, min_elements=4096)
    q = result.model
    onnx.checker.check_model(q)
    nbits = [n for n in q.graph.node if n.op_type == "MatMulNBits"]
    assert {n.name for n in nbits} == {"fc1_Q%d" % bits, "fc2_Q%d" % bits}  # Gemm rewritten, then quantized
    assert all(helper.get_attribute_value(next(a for a in n.attribute if a.name == "bits")) == bits for n in nbits)
    assert not any(n.op_type == "Gemm" for n in q.graph.node)
    ref, got = infer(model, mlp_data)[0], infer(q, mlp_data)[0]
    assert relative_error(ref, got) < bound
    assert result.report["fidelity"]["outputs"]["y"]["relative_error"] < bound
    small = [f for f in result.report["left_in_float"] if f["node"] == "head"]
    assert small and "too small" in small[0]["reason"]  # 256 x 8 weights < 4096
    assert result.report["size_ratio"] < (0.45 if bits == 4 else 0.6)


def test_int4_block_size_and_symmetry_change_the_weights(mlp_data):
    model = mlp()
    sym = quantize(model, mlp_data, mode="int4", symmetric=True, block_size=16, min_elements=4096).model
    node = next(n for n in sym.graph.node if n.op_type == "MatMulNBits")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["block_size"] == 16 and attrs["K"] == 128 and attrs["N"] == 256
    assert len(node.input) == 3  # symmetric: no zero points
    asym = quantize(model, mlp_data, mode="int4", block_size=64, min_elements=4096).model
    assert len(next(n for n in asym.graph.node if n.op_type == "MatMulNBits").input) == 4
    ref = infer(model, mlp_data)[0]
    # smaller blocks fit the weights more closely
    assert relative_error(ref, infer(sym, mlp_data)[0]) < 0.15 and relative_error(ref, infer(asym, mlp_data)[0]) < 0.2


def test_bad_block_size_is_a_one_line_error(mlp_data):
    from onnxslim.errors import SlimError
    with pytest.raises(SlimError, match="power of 2"):
        quantize(mlp(), mlp_data, mode="int4", block_size=24)


def test_gemm_rewrite_is_exact(mlp_data):
    model = mlp()
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    assert weight_only.gemms_to_matmul(rewritten) == ["fc2"]
    onnx.checker.check_model(rewritten)
    np.testing.assert_allclose(infer(rewritten, mlp_data)[0], infer(model, mlp_data)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_gather_block_quantized_reads_our_packing(bits, symmetric):
    """onnxruntime's GatherBlockQuantized returns exactly the rows we dequantize, within half a step."""
    rng = np.random.default_rng(0)
    table = rng.standard_normal((50, 72)).astype(np.float32)  # 72 = 2 blocks of 32 + a partial one
    codes, scale, zero = weight_only.blockwise(table, bits, 32, symmetric)
    zp = zero if zero is not None else np.full(scale.shape, 1 << (bits - 1))
    blocks = np.repeat(np.arange(scale.shape[1]), 32)[:72]
    deq = (codes.astype(np.float32) - zp[:, blocks]) * scale[:, blocks]
    assert np.all(np.abs(deq - table) <= scale[:, blocks] * 0.5001 + 1e-6)
    ids = np.array([[3, 0, 49], [7, 7, 1]], np.int64)
    graph = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["y"], name="embed")], "g",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 72])],
                              [numpy_helper.from_array(table, "table")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    weight_only.quantize_gathers(model, {"embed"}, bits, 32, symmetric)
    assert [n.op_type for n in model.graph.node] == ["GatherBlockQuantized"]
    np.testing.assert_allclose(infer(model, {"ids": ids})[0], deq[ids], rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def decoder():
    spec = build_decoder.Spec(layers=2, hidden=64, heads=4, ffn=256, vocab=512, max_seq=32)
    model = build_decoder.build(spec)
    ids = np.random.default_rng(2).integers(0, 512, (8, 16)).astype(np.int64)
    return model, {"input_ids": ids}


def test_decoder_int4_quantizes_matmuls_and_the_embedding(decoder):
    model, data = decoder
    result = quantize(model, data, mode="int4", min_elements=8192)
    q = result.model
    ops = [n.op_type for n in q.graph.node]
    assert ops.count("MatMulNBits") == 2 * 3 + 1  # qkv, ffn up/down per layer (attn_out is small), lm head
    assert ops.count("GatherBlockQuantized") == 1
    assert {f["node"] for f in result.report["left_in_float"]} == {"l0.attn_out", "l1.attn_out"}  # 64 x 64 < 8192
    ref, got = infer(model, data)[0], infer(q, data)[0]
    assert relative_error(ref, got) < 0.2
    cos = (ref * got).sum(-1) / np.linalg.norm(ref, axis=-1) / np.linalg.norm(got, axis=-1)
    assert cos.mean() > 0.98
    # MACs stay countable through the contrib ops
    shapes = {"input_ids": (1, 16)}
    assert model_cost(q, shapes)["macs"] == model_cost(model, shapes)["macs"]


def test_decoder_embeddings_can_stay_in_float(decoder):
    model, data = decoder
    result = quantize(model, data, mode="int4", embeddings=False, min_elements=8192)
    assert not any(n.op_type == "GatherBlockQuantized" for n in result.model.graph.node)
    assert any(f["node"] == "tok_embed" and "embedding" in f["reason"] for f in result.report["left_in_float"])


def test_tolerance_keeps_the_most_damaging_layers_in_float(decoder):
    model, data = decoder
    plain = quantize(model, data, mode="int4", min_elements=8192, block_size=128)
    error = plain.report["fidelity"]["outputs"]["logits"]["relative_error"]
    tolerance = error * 0.6
    result = quantize(model, data, mode="int4", min_elements=8192, block_size=128, tolerance=tolerance)
    fb = result.report["fallback"]
    assert fb["kept_in_float"] and fb["met"] and fb["error_after"] <= tolerance
    floats = {f["node"] for f in result.report["left_in_float"] if "fallback" in f["reason"]}
    assert floats == set(fb["kept_in_float"])
    assert result.report["fidelity"]["outputs"]["logits"]["relative_error"] <= tolerance + 1e-6
    quantized = {c["node"] for c in result.report["weight_only"]["quantized"]}
    assert not quantized & floats


@pytest.mark.slow
def test_cli_int4_writes_a_runnable_model(tmp_path, decoder):
    model, data = decoder
    src, dst, report = tmp_path / "dec.onnx", tmp_path / "dec_int4.onnx", tmp_path / "r.json"
    onnx.save_model(model, str(src))
    np.savez(tmp_path / "ids.npz", **data)
    proc = subprocess.run([sys.executable, "-m", "onnxslim.cli", str(src), str(dst), "--quantize", "int4", "--block-size", "16",
                           "--symmetric", "--calib", str(tmp_path / "ids.npz"), "--data", str(tmp_path / "ids.npz"),
                           "--input-shape", "input_ids:1,16", "--no-latency", "--report", str(report), "-q"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(report.read_text())["passes"]["quantize"]
    assert rep["weight_only"]["block_size"] == 16 and rep["weight_only"]["symmetric"] is True
    q = onnx.load(str(dst))
    assert any(n.op_type == "MatMulNBits" for n in q.graph.node)
    assert relative_error(infer(model, data)[0], infer(q, data)[0]) < 0.2
    bad = subprocess.run([sys.executable, "-m", "onnxslim.cli", str(src), str(tmp_path / "x.onnx"), "--quantize", "int4",
                          "--block-size", "20", "--input-shape", "input_ids:1,16", "-q", "--no-validate"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("onnxslim: error:") and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()
