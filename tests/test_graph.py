"""graph.py: load/save round trip, atomic writes, never overwriting the input, external data (and refusing
data from outside the model's folder), the >2 GB save path (with TWO_GB lowered), and bad files."""
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxslim.graph as graph
from onnxslim.light import copy_fields
from onnxslim.errors import SlimError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(REPO, "models", "digits_resnet_folded.onnx")


def _model(n=32, seed=0):
    """y = relu(x @ W + b) with W [n, n] (4 KB at n=32) and a small bias."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((n, n)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"], name="mm"),
             helper.make_node("Add", ["xw", "b"], ["z"], name="add"),
             helper.make_node("Relu", ["z"], ["y"], name="relu")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", n])], [w, b])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _run(model_or_path, n=32):
    src = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((3, n)).astype(np.float32)
    return sess.run(None, {"x": x})[0]


def _weights(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _assert_same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k])


def _save_external(model, folder, location="weights.bin", name="m.onnx"):
    """Save with every tensor in `location` (relative to folder) via onnx itself."""
    path = os.path.join(folder, name)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # onnx moves the caller's tensors to external data in place
    onnx.save_model(copy, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0)
    return path


def _set_location(path, location):
    m = onnx.load(path, load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    with open(path, "wb") as fh:
        fh.write(m.SerializeToString())


def _one_line_error(excinfo):
    msg = str(excinfo.value)
    assert msg and "\n" not in msg and "Traceback" not in msg
    return msg


# -- round trip and atomic writes ---------------------------------------------------------------------

def test_round_trip_keeps_graph_and_weights(tmp_path):
    model = _model()
    out = tmp_path / "sub" / "out.onnx"  # parent folders are created
    graph.save_model(model, out)
    back = graph.load_model(out)
    assert [n.op_type for n in back.graph.node] == ["MatMul", "Add", "Relu"]
    assert [i.name for i in back.graph.input] == ["x"] and [o.name for o in back.graph.output] == ["y"]
    _assert_same_weights(model, back)
    np.testing.assert_array_equal(_run(back), _run(model))
    assert sorted(os.listdir(out.parent)) == ["out.onnx"]  # no temp or data files


def test_saved_file_gets_the_users_permissions_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        graph.save_model(_model(), tmp_path / "out.onnx")
    finally:
        os.umask(old)
    assert (os.stat(tmp_path / "out.onnx").st_mode & 0o777) == 0o644


def _failing_replace(monkeypatch):
    def boom(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(graph.os, "replace", boom)


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    _failing_replace(monkeypatch)
    with pytest.raises(SlimError) as err:
        graph.save_model(_model(), tmp_path / "out.onnx")
    assert "No space left" in _one_line_error(err) and "nothing written" in str(err.value)
    assert os.listdir(tmp_path) == []


def test_failed_save_keeps_existing_output(tmp_path, monkeypatch):
    out = tmp_path / "out.onnx"
    graph.save_model(_model(seed=0), out)
    before = out.read_bytes()
    _failing_replace(monkeypatch)
    with pytest.raises(SlimError, match="No space left on device; nothing written"):
        graph.save_model(_model(seed=1), out)
    assert out.read_bytes() == before
    assert os.listdir(tmp_path) == ["out.onnx"]


def test_interrupt_while_writing_weights_leaves_no_temp_files(tmp_path, monkeypatch):
    """Not an OSError (a bug, an interrupt) halfway through the data file: the error goes on, the temp
    model and data files go away, the existing output stays."""
    out = tmp_path / "out.onnx"
    out.write_bytes(b"old")
    real_call = graph.ExternalWriter.__call__
    calls = []

    def interrupted(self, tensor):
        calls.append(tensor.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_call(self, tensor)
    monkeypatch.setattr(graph.ExternalWriter, "__call__", interrupted)
    monkeypatch.setattr(graph, "TWO_GB", 100)
    with pytest.raises(KeyboardInterrupt):
        graph.save_model(_model(), out)
    assert len(calls) == 2
    assert out.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.onnx"]


def test_existing_output_is_replaced_on_success(tmp_path):
    out = tmp_path / "out.onnx"
    out.write_bytes(b"old")
    graph.save_model(_model(seed=3), out)
    _assert_same_weights(graph.load_model(out), _model(seed=3))


def test_refuses_to_overwrite_the_input(tmp_path):
    src = tmp_path / "m.onnx"
    graph.save_model(_model(), src)
    before = src.read_bytes()
    link = tmp_path / "link.onnx"
    link.symlink_to(src)
    for same in (src, tmp_path / "." / "m.onnx", link):
        with pytest.raises(SlimError) as err:
            graph.save_model(_model(seed=5), same, input_path=src)
        assert "input" in _one_line_error(err)
    assert src.read_bytes() == before
    # a different path is fine
    graph.save_model(_model(seed=5), tmp_path / "other.onnx", input_path=src)


def test_refuses_to_overwrite_the_inputs_external_data(tmp_path, monkeypatch):
    src = _save_external(_model(), str(tmp_path))  # m.onnx + weights.bin
    data = (tmp_path / "weights.bin").read_bytes()
    assert graph.model_files(src) == [Path(src), tmp_path / "weights.bin"]
    with pytest.raises(SlimError) as err:
        graph.save_model(_model(seed=5), tmp_path / "weights.bin", input_path=src)
    assert "external data" in _one_line_error(err)
    # the >2 GB form writes <name>.data: that must not be the input's data file either
    (tmp_path / "w.onnx.data").write_bytes(b"")
    os.replace(tmp_path / "weights.bin", tmp_path / "w.onnx.data")
    _set_location(src, "w.onnx.data")
    monkeypatch.setattr(graph, "TWO_GB", 1000)
    with pytest.raises(SlimError, match="holds the input model's external data; refusing to overwrite it"):
        graph.save_model(_model(n=64), tmp_path / "w.onnx", input_path=src)
    assert (tmp_path / "w.onnx.data").read_bytes() == data
    assert not (tmp_path / "w.onnx").exists()
    _assert_same_weights(graph.load_model(src), _model())


def test_model_files_of_a_non_model_is_just_the_file(tmp_path):
    (tmp_path / "x.onnx").write_text("not a model")
    assert graph.model_files(tmp_path / "x.onnx") == [tmp_path / "x.onnx"]


def test_output_that_is_a_folder_is_refused(tmp_path):
    (tmp_path / "out.onnx").mkdir()
    with pytest.raises(SlimError) as err:
        graph.save_model(_model(), tmp_path / "out.onnx")
    assert "folder" in _one_line_error(err)


# -- external data --------------------------------------------------------------------------------------

def test_external_data_loads_with_its_weights(tmp_path):
    model = _model()
    path = _save_external(model, str(tmp_path))
    assert (tmp_path / "weights.bin").stat().st_size > 4000
    back = graph.load_model(path)
    assert not any(onnx.external_data_helper.uses_external_data(t) for t in back.graph.initializer)
    _assert_same_weights(model, back)
    np.testing.assert_array_equal(_run(back), _run(model))


def test_external_data_in_a_subfolder_is_fine(tmp_path):
    (tmp_path / "data").mkdir()
    path = _save_external(_model(), str(tmp_path), location="data/w.bin")
    _assert_same_weights(graph.load_model(path), _model())


@pytest.mark.parametrize("where", ["parent", "absolute", "symlink"])
def test_external_data_outside_the_folder_is_refused(tmp_path, where):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    path = _save_external(_model(), str(model_dir))
    outside = tmp_path / "x.bin"  # the bytes exist: the refusal is about where they are, not that they are missing
    os.replace(model_dir / "weights.bin", outside)
    if where == "parent":
        _set_location(path, "../x.bin")
    elif where == "absolute":
        _set_location(path, str(outside))
    else:
        (model_dir / "weights.bin").symlink_to(outside)
    with pytest.raises(SlimError) as err:
        graph.load_model(path)
    assert "outside the model's folder" in _one_line_error(err)


def test_missing_external_file(tmp_path):
    path = _save_external(_model(), str(tmp_path))
    os.unlink(tmp_path / "weights.bin")
    with pytest.raises(SlimError) as err:
        graph.load_model(path)
    assert "missing" in _one_line_error(err)


@pytest.mark.parametrize("keep_length", [True, False])
def test_truncated_external_file(tmp_path, keep_length):
    path = _save_external(_model(), str(tmp_path))
    if not keep_length:  # without a length the size check falls to the tensor's declared shape
        m = onnx.load(path, load_external_data=False)
        for t in m.graph.initializer:
            keep = [(e.key, e.value) for e in t.external_data if e.key != "length"]
            del t.external_data[:]
            for k, v in keep:
                t.external_data.add(key=k, value=v)
        with open(path, "wb") as fh:
            fh.write(m.SerializeToString())
    with open(tmp_path / "weights.bin", "r+b") as fh:
        fh.truncate(1000)
    with pytest.raises(SlimError) as err:
        graph.load_model(path)
    _one_line_error(err)


def _drop_lengths(path):
    m = onnx.load(path, load_external_data=False)
    for t in m.graph.initializer:
        keep = [(e.key, e.value) for e in t.external_data if e.key != "length"]
        del t.external_data[:]
        for k, v in keep:
            t.external_data.add(key=k, value=v)
    with open(path, "wb") as fh:
        fh.write(m.SerializeToString())


def test_external_data_without_length_reads_only_the_tensor(tmp_path):
    """Other tools' data files may hold more after a tensor (or be one big shared blob)."""
    path = _save_external(_model(), str(tmp_path))
    _drop_lengths(path)
    with open(tmp_path / "weights.bin", "ab") as fh:
        fh.write(b"\x7f" * 100_000)
    back = graph.load_model(path)
    _assert_same_weights(back, _model())


@pytest.mark.parametrize("key,value", [("length", str(10**15)), ("offset", "-8"), ("offset", "abc")])
def test_corrupt_external_offsets_are_refused_before_reading(tmp_path, key, value):
    path = _save_external(_model(), str(tmp_path))
    m = onnx.load(path, load_external_data=False)
    t = m.graph.initializer[0]
    entries = {e.key: e.value for e in t.external_data}
    entries[key] = value
    del t.external_data[:]
    for k, v in entries.items():
        t.external_data.add(key=k, value=v)
    with open(path, "wb") as fh:
        fh.write(m.SerializeToString())
    with pytest.raises(SlimError) as err:
        graph.load_model(path)
    _one_line_error(err)


# -- the >2 GB path, with the threshold lowered instead of 2 GB allocated ------------------------------

def test_large_model_saves_its_weights_beside_it(tmp_path, monkeypatch):
    monkeypatch.setattr(graph, "TWO_GB", 1000)
    model = _model(n=64)  # W is 16 KB: over the lowered limit
    out = tmp_path / "big.onnx"
    graph.save_model(model, out)
    assert sorted(os.listdir(tmp_path)) == ["big.onnx", "big.onnx.data"]
    proto = onnx.load(str(out), load_external_data=False)
    w = next(t for t in proto.graph.initializer if t.name == "W")
    assert onnx.external_data_helper.uses_external_data(w)
    assert {e.key: e.value for e in w.external_data}["location"] == "big.onnx.data"
    assert (tmp_path / "big.onnx.data").stat().st_size >= 64 * 64 * 4
    assert out.stat().st_size < 2000  # the graph only
    back = graph.load_model(out)
    _assert_same_weights(model, back)
    np.testing.assert_array_equal(_run(str(out), n=64), _run(model, n=64))  # ORT reads the data file itself
    # saving again replaces the data file instead of growing it, and leaves no temp files
    size = (tmp_path / "big.onnx.data").stat().st_size
    graph.save_model(back, out)
    assert (tmp_path / "big.onnx.data").stat().st_size == size
    assert sorted(os.listdir(tmp_path)) == ["big.onnx", "big.onnx.data"]
    np.testing.assert_array_equal(_run(str(out), n=64), _run(model, n=64))


def test_large_save_does_not_change_the_callers_model(tmp_path, monkeypatch):
    monkeypatch.setattr(graph, "TWO_GB", 1000)
    model = _model(n=64)
    before = model.SerializeToString()
    graph.save_model(model, tmp_path / "big.onnx")
    assert model.SerializeToString() == before


def _size_model():
    """Big and small initializers, a float_data tensor and a big Constant-node tensor."""
    model = _model(n=80)
    big = numpy_helper.from_array(np.arange(5000, dtype=np.float32).reshape(50, 100), "C")
    model.graph.node.insert(0, helper.make_node("Constant", [], ["c"], value=big, name="const"))
    model.graph.initializer.append(helper.make_tensor("F", TensorProto.FLOAT, [4100], np.ones(4100).tolist()))
    return model


def test_model_bytes_is_exact_for_small_models():
    model = _size_model()
    assert graph.model_bytes(model) == len(model.SerializeToString())


def test_model_bytes_estimate_without_serializing(monkeypatch):
    """Past EXACT_SIZE_LIMIT the size comes from a weightless copy plus the tensors' data sizes."""
    model = _size_model()
    monkeypatch.setattr(graph, "EXACT_SIZE_LIMIT", 0)
    exact = len(model.SerializeToString())
    estimate = graph.model_bytes(model)
    assert exact <= estimate <= exact + 16 * 4  # a few bytes of framing per large tensor


def test_copy_fields_copies_everything_but_the_skipped_field():
    """model_bytes' past-2-GB fallback measures a copy without the initializers; the copy must be whole."""
    model = _model()
    model.doc_string = "doc"
    light = onnx.ModelProto()
    copy_fields(model, light, skip="graph")
    copy_fields(model.graph, light.graph, skip="initializer")
    expected = onnx.ModelProto()
    expected.CopyFrom(model)
    del expected.graph.initializer[:]
    assert light == expected


# -- files that are not (whole) ONNX models ---------------------------------------------------------------

def _digits_bytes():
    with open(DIGITS, "rb") as fh:
        return fh.read()


def _bad_files():
    data = _digits_bytes()
    n = len(data)
    cases = {
        "empty": b"",
        "text": b"hello, this is not a model\n",
        "json": b'{"graph": {"node": []}}',
        "zeros": b"\x00" * 256,
        "npz": open(os.path.join(REPO, "models", "digits_eval.npz"), "rb").read()[:4096],
    }
    for frac in (0.001, 0.1, 0.5, 0.9, 0.999):
        cases[f"truncated_{frac}"] = data[: int(n * frac)]
    # node names and op types live in the first bytes before the weights; flip bytes there
    rng = np.random.default_rng(0)
    header_end = data.index(b"Conv") + 200
    for k in range(3):
        b = bytearray(data)
        for i in rng.integers(0, header_end, 12):
            b[i] ^= 0xA5
        cases[f"corrupt_{k}"] = bytes(b)
    return cases


@pytest.mark.parametrize("name,content", list(_bad_files().items()))
def test_bad_files_give_one_line_slimerror(tmp_path, name, content):
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    try:
        model = graph.load_model(path)
    except SlimError as err:
        msg = str(err)
        assert msg and "\n" not in msg
        assert str(path) in msg or "corrupt" in msg or "ONNX" in msg
        return
    # a flip that only hit a weight or a name may still be a valid model; it must then be a usable one
    assert name.startswith("corrupt")
    onnx.checker.check_model(model)


def test_invalid_utf8_name_is_refused(tmp_path):
    data = bytearray(_digits_bytes())
    i = data.index(b"/layer1/conv1/Conv")
    data[i + 3] = 0x8D  # 'a' of 'layer' -> a lone continuation byte
    path = tmp_path / "m.onnx"
    path.write_bytes(bytes(data))
    with pytest.raises(SlimError) as err:
        graph.load_model(path)
    assert "UTF-8" in _one_line_error(err)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(SlimError) as err:
        graph.load_model(tmp_path / "nope.onnx")
    assert "no such file" in _one_line_error(err)
    with pytest.raises(SlimError) as err:
        graph.load_model(tmp_path)
    assert "folder" in _one_line_error(err)


def test_size_upper_bound_is_at_least_the_serialized_size_without_encoding_the_weights():
    """fits_protobuf decides the >2 GB paths from this bound: it must never be below the exact size, whatever
    holds the data (raw bytes, packed floats, varint int32/int64 with negatives that take 10 bytes each, a
    Constant node's tensor nested in an attribute), and stay within a few bytes a tensor of it."""
    from onnx import TensorProto, helper, numpy_helper
    from onnxslim.graph import fits_protobuf, model_bytes, size_upper_bound
    rng = np.random.default_rng(0)
    raw = numpy_helper.from_array(rng.standard_normal((64, 128)).astype(np.float32), "raw")
    floats = helper.make_tensor("floats", TensorProto.FLOAT, [80, 80], rng.standard_normal(6400).tolist())
    negative = helper.make_tensor("neg", TensorProto.INT64, [5000], (-rng.integers(1, 2**40, 5000)).tolist())
    int8s = helper.make_tensor("int8s", TensorProto.INT8, [6000], (-rng.integers(1, 100, 6000)).tolist())
    const = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.ones((70, 70), np.float32)))
    graph = helper.make_graph(
        [const, helper.make_node("Add", ["c", "c"], ["y"])], "g", [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [70, 70])], [raw, floats, negative, int8s])
    model = helper.make_model(graph)
    exact = model.ByteSize()
    assert model_bytes(model) == exact
    assert exact <= size_upper_bound(model) <= exact + 4 * 6000 + 200  # int8 varints: 10 bytes bound, 2 used
    assert fits_protobuf(model)


def test_model_bytes_is_exact_without_encoding_the_weights():
    """The size from dims and framing equals the serialized length, whatever the initializers carry: raw
    data of every length class of the varint (1-3 bytes of length), packed floats, doc strings, an external
    reference, Constant nodes; and a model over the old 64 MB exact-size limit."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), f"w{n}") for n in (1, 31, 32, 5000, 40000)]
    inits[2].doc_string = "a weight with a doc string"
    inits.append(helper.make_tensor("packed", TensorProto.FLOAT, [100], rng.standard_normal(100).tolist()))
    external = TensorProto(name="ext", data_type=TensorProto.FLOAT, dims=[1000, 1000])
    external.data_location = TensorProto.EXTERNAL
    external.external_data.add(key="location", value="w.bin")
    inits.append(external)
    inits.append(numpy_helper.from_array(np.zeros(17 * 2**20, np.float32), "big"))  # 68 MB
    const = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.ones((70, 70), np.float32)))
    model = helper.make_model(helper.make_graph(
        [const, helper.make_node("Add", ["c", "c"], ["y"])], "g", [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [70, 70])], inits), doc_string="model")
    assert graph.model_bytes(model) == len(model.SerializeToString())
