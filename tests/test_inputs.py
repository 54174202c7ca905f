"""inputs.py: --input-shape parsing, shape resolution, random feeds and checked .npy/.npz loading."""
import numpy as np
import pytest
from onnx import TensorProto, helper

from onnxslim.errors import SlimError
from onnxslim.inputs import load_arrays, model_inputs, parse_input_shapes, random_feeds, resolve_shapes


def _model(*inputs, initializers=()):
    """inputs: (name, elem_type, shape) with str/None dims for dynamic ones; the graph just passes them on."""
    nodes = [helper.make_node("Identity", [name], [f"{name}_out"]) for name, _, _ in inputs]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                              [helper.make_tensor_value_info(f"{n}_out", t, None) for n, t, _ in inputs],
                              list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _image_model():
    return _model(("image", TensorProto.FLOAT, ["batch", 3, 4, 4]))


def _text_model():
    return _model(("input_ids", TensorProto.INT64, ["batch", "seq"]),
                  ("attention_mask", TensorProto.INT64, ["batch", "seq"]),
                  ("token_type_ids", TensorProto.INT64, ["batch", "seq"]))


# -- parse_input_shapes -------------------------------------------------------------------------------

def test_parse_input_shapes_good():
    assert parse_input_shapes(["image:1,3,224,224"]) == {"image": (1, 3, 224, 224)}
    assert parse_input_shapes(["a:2,8", "b:2, 8"]) == {"a": (2, 8), "b": (2, 8)}
    # the name may itself contain colons (the last one separates the dims)
    assert parse_input_shapes(["scope:x:5"]) == {"scope:x": (5,)}
    assert parse_input_shapes(None) == {} and parse_input_shapes([]) == {}


@pytest.mark.parametrize("item", ["image", "image:", ":1,3", "image:1,x,3", "image:1,0,3", "image:1,-3", "image:1.5"])
def test_parse_input_shapes_bad(item):
    with pytest.raises(SlimError, match="--input-shape"):
        parse_input_shapes([item])


# -- model_inputs / resolve_shapes --------------------------------------------------------------------

def test_model_inputs_skip_initializers_listed_as_inputs():
    from onnx import numpy_helper
    m = _model(("x", TensorProto.FLOAT, [1, 2]), ("w", TensorProto.FLOAT, [2]),
               initializers=[numpy_helper.from_array(np.zeros(2, np.float32), "w")])
    specs = model_inputs(m)
    assert [s.name for s in specs] == ["x"]
    assert specs[0].dtype == np.float32 and specs[0].shape == (1, 2)


# every ONNX tensor type onnxruntime takes as a graph input: a lossless rewrite feeds nothing, and
# validation must feed them all (the node cases have string, int16 and uint16/32/64 inputs)
_FEEDABLE = ["FLOAT", "DOUBLE", "FLOAT16", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16",
             "UINT32", "UINT64", "BOOL", "STRING"]


@pytest.mark.parametrize("type_name", _FEEDABLE)
def test_random_feeds_cover_every_tensor_type(type_name):
    import onnxruntime as ort
    elem = getattr(TensorProto, type_name)
    m = _model(("x", elem, ["batch", 3]))
    feed = random_feeds(m, count=1)[0]
    assert feed["x"].shape == (1, 3)
    assert feed["x"].dtype == helper.tensor_dtype_to_np_dtype(elem)
    try:
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:
        pytest.skip(f"this onnxruntime has no Identity for {type_name}")
    (out,) = sess.run(None, feed)
    np.testing.assert_array_equal(out, feed["x"])


def test_random_feeds_ml_dtypes_floats():
    """bfloat16 and float8 feeds have their own dtype (onnxruntime's Python API cannot take them: then
    validation is skipped with the reason, see test_pipeline)."""
    for name in ("BFLOAT16", "FLOAT8E4M3FN"):
        elem = getattr(TensorProto, name)
        feed = random_feeds(_model(("x", elem, [2, 3])), count=1)[0]
        assert feed["x"].dtype == helper.tensor_dtype_to_np_dtype(elem) and feed["x"].shape == (2, 3)


def test_short_integer_vectors_stay_small():
    """1-D integer inputs of a few elements are often pads, repeats or shapes: large values would make
    validation allocate huge tensors (Pad with random pads in [0, 100) on 4 axes)."""
    feed = random_feeds(_model(("pads", TensorProto.INT64, [8])), count=3)
    assert all(0 <= f["pads"].min() and f["pads"].max() < 4 for f in feed)


def test_model_inputs_reject_non_tensor_inputs():
    seq = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("SequenceLength", ["s"], ["n"])], "g", [seq],
                              [helper.make_tensor_value_info("n", TensorProto.INT64, [])])
    with pytest.raises(SlimError, match="sequence_type"):
        model_inputs(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_resolve_shapes_dynamic_batch():
    assert resolve_shapes(_image_model()) == {"image": (1, 3, 4, 4)}
    assert resolve_shapes(_image_model(), batch=8) == {"image": (8, 3, 4, 4)}
    assert resolve_shapes(_image_model(), {"image": (2, 3, 4, 4)}) == {"image": (2, 3, 4, 4)}


def test_resolve_shapes_needs_non_batch_dims():
    with pytest.raises(SlimError, match="--input-shape input_ids"):
        resolve_shapes(_text_model())
    shapes = {n: (1, 16) for n in ("input_ids", "attention_mask", "token_type_ids")}
    assert resolve_shapes(_text_model(), shapes) == shapes


@pytest.mark.parametrize("override, match", [
    ({"imag": (1, 3, 4, 4)}, "model's inputs"),      # unknown name
    ({"image": (1, 3, 4)}, "rank"),                  # wrong rank
    ({"image": (1, 1, 4, 4)}, "needs 3 on axis 1"),  # conflicts with a fixed dim
])
def test_resolve_shapes_rejects_bad_overrides(override, match):
    with pytest.raises(SlimError, match=match):
        resolve_shapes(_image_model(), override)


# -- random_feeds -------------------------------------------------------------------------------------

def test_random_feeds_dtypes_and_shapes():
    m = _model(("image", TensorProto.FLOAT, ["N", 3, 4, 4]), ("half", TensorProto.FLOAT16, [2]),
               ("ids", TensorProto.INT64, ["N", 6]), ("attention_mask", TensorProto.INT32, ["N", 6]),
               ("token_type_ids", TensorProto.INT64, ["N", 6]), ("flag", TensorProto.BOOL, [1]),
               ("pixels", TensorProto.UINT8, ["N", 2]))
    feeds = random_feeds(m, {"image": (2, 3, 4, 4)}, count=3, seed=7)
    assert len(feeds) == 3
    f = feeds[0]
    assert f["image"].dtype == np.float32 and f["image"].shape == (2, 3, 4, 4)
    assert f["half"].dtype == np.float16 and f["half"].shape == (2,)
    assert f["ids"].dtype == np.int64 and f["ids"].shape == (1, 6)
    assert f["ids"].min() >= 0 and f["ids"].max() < 100
    assert f["attention_mask"].dtype == np.int32 and (f["attention_mask"] == 1).all()
    assert (f["token_type_ids"] == 0).all()
    assert f["flag"].dtype == np.bool_ and f["pixels"].dtype == np.uint8
    # batches differ from each other, and the same seed gives the same feeds
    assert not np.array_equal(feeds[0]["image"], feeds[1]["image"])
    again = random_feeds(m, {"image": (2, 3, 4, 4)}, count=3, seed=7)
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(feeds, again) for k in a)


# -- load_arrays --------------------------------------------------------------------------------------

def test_load_arrays_accepts_good_npz_and_npy(tmp_path):
    m = _text_model()
    ids = np.arange(5 * 8).reshape(5, 8)
    np.savez(tmp_path / "tokens.npz", input_ids=ids, attention_mask=np.ones((5, 8), np.int64),
             token_type_ids=np.zeros((5, 8), np.int32), extra=np.zeros(3))
    arrays = load_arrays(tmp_path / "tokens.npz", m)
    assert sorted(arrays) == ["attention_mask", "input_ids", "token_type_ids"]
    np.testing.assert_array_equal(arrays["input_ids"], ids)
    # an integer array of another width is converted to the model's type
    assert arrays["token_type_ids"].dtype == np.int64
    np.save(tmp_path / "images.npy", np.ones((3, 3, 4, 4), np.float64))
    images = load_arrays(tmp_path / "images.npy", _image_model())
    assert images["image"].dtype == np.float32 and images["image"].shape == (3, 3, 4, 4)


@pytest.mark.parametrize("arrays, match", [
    ({"img": np.zeros((2, 3, 4, 4), np.float32)}, "no array for model input"),      # wrong name
    ({"image": np.zeros((2, 3, 4), np.float32)}, "rank"),                            # wrong rank
    ({"image": np.zeros((2, 3, 5, 4), np.float32)}, "wants 4 on axis 2"),            # wrong shape
    ({"image": np.zeros((2, 3, 4, 4), np.int64)}, "the model wants float32"),       # wrong dtype kind
    ({"image": np.zeros((0, 3, 4, 4), np.float32)}, "no samples"),
])
def test_load_arrays_rejects_mismatches(tmp_path, arrays, match):
    np.savez(tmp_path / "data.npz", **arrays)
    with pytest.raises(SlimError, match=match):
        load_arrays(tmp_path / "data.npz", _image_model())


def test_load_arrays_rejects_bad_files(tmp_path):
    with pytest.raises(SlimError, match="no such data file"):
        load_arrays(tmp_path / "missing.npz", _image_model())
    (tmp_path / "data.txt").write_text("1 2 3")
    with pytest.raises(SlimError, match=".npy or .npz"):
        load_arrays(tmp_path / "data.txt", _image_model())
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(SlimError, match="cannot read"):
        load_arrays(tmp_path / "broken.npz", _image_model())
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(SlimError, match="cannot read"):
        load_arrays(tmp_path / "objects.npy", _image_model())
    # one .npy cannot feed a model with several inputs
    np.save(tmp_path / "ids.npy", np.zeros((2, 8), np.int64))
    with pytest.raises(SlimError, match="npz"):
        load_arrays(tmp_path / "ids.npy", _text_model())


def test_load_arrays_rejects_unequal_sample_counts(tmp_path):
    np.savez(tmp_path / "t.npz", input_ids=np.zeros((4, 8), np.int64), attention_mask=np.ones((3, 8), np.int64),
             token_type_ids=np.zeros((4, 8), np.int64))
    with pytest.raises(SlimError, match="sample counts"):
        load_arrays(tmp_path / "t.npz", _text_model())
