"""Calibration datasets: image folders (tiny generated PNG/JPEG), .npy/.npz, random, preprocess files, errors."""
import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from onnxslim.calibration import Preprocess, load_calibration
from onnxslim.errors import SlimError


def image_model(shape=("N", 3, 8, 8), inputs=1):
    ins = [helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, list(shape)) for i in range(inputs)]
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Identity", ["x0"], ["y"])]
    if inputs == 2:
        nodes = [helper.make_node("Add", ["x0", "x1"], ["y"])]
    return helper.make_model(helper.make_graph(nodes, "g", ins, [out]))


def write_images(folder, count, size=(12, 10), fmt="PNG"):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    pixels = []
    for i in range(count):
        arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"img{i:02d}.{fmt.lower()}", fmt)
        pixels.append(arr)
    return pixels


def test_image_folder_streams_sorted_batches(tmp_path):
    write_images(tmp_path / "imgs", 5)
    ds = load_calibration(str(tmp_path / "imgs"), image_model())
    assert ds.real and ds.names == ["x0"] and len(ds) == 5
    batches = list(ds.batches(2))
    assert [b["x0"].shape for b in batches] == [(2, 3, 8, 8), (2, 3, 8, 8), (1, 3, 8, 8)]
    assert all(b["x0"].dtype == np.float32 for b in batches)
    # default scale 1/255 and mean 0, std 1 -> values in [0, 1]
    x = np.concatenate([b["x0"] for b in batches])
    assert x.min() >= 0 and x.max() <= 1


def test_size_takes_first_images_in_sorted_order(tmp_path):
    write_images(tmp_path / "imgs", 4)
    full = np.concatenate([b["x0"] for b in load_calibration(str(tmp_path / "imgs"), image_model()).batches(4)])
    ds = load_calibration(str(tmp_path / "imgs"), image_model(), size=2)
    assert len(ds) == 2 and [f.name for f in ds.files] == ["img00.png", "img01.png"]
    np.testing.assert_array_equal(next(ds.batches(8))["x0"], full[:2])


def test_preprocess_math_nchw_and_nhwc(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    arr = np.zeros((8, 8, 3), np.uint8)
    arr[..., 0], arr[..., 1], arr[..., 2] = 10, 100, 250
    Image.fromarray(arr).save(folder / "a.png")
    pp = Preprocess(resize=8, crop=8, mean=(127, 127, 127), std=(128, 128, 128), scale=1.0)  # EfficientNet-Lite style
    x = next(load_calibration(str(folder), image_model(), preprocess=pp).batches(1))["x0"]
    np.testing.assert_allclose(x[0, :, 0, 0], (np.array([10, 100, 250]) - 127) / 128, rtol=1e-6)
    bgr = Preprocess(crop=8, resize=8, channels="BGR", layout="NHWC")
    y = next(load_calibration(str(folder), image_model(("N", 8, 8, 3)), preprocess=bgr).batches(1))["x0"]
    assert y.shape == (1, 8, 8, 3)
    np.testing.assert_allclose(y[0, 0, 0], np.array([250, 100, 10]) / 255, rtol=1e-6)


def test_resize_then_centre_crop(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    arr = np.zeros((16, 32, 3), np.uint8)  # wide image: left/right quarters are dropped by the centre crop
    arr[:, 8:24] = 200
    Image.fromarray(arr).save(folder / "a.png")
    x = next(load_calibration(str(folder), image_model(), preprocess=Preprocess(resize=8, crop=8, scale=1.0)).batches(1))["x0"]
    assert x.shape == (1, 3, 8, 8)
    assert np.all(x[0, :, :, 1:-1] > 150)  # the crop keeps the bright centre band


def test_grayscale_and_jpeg(tmp_path):
    write_images(tmp_path / "imgs", 3, fmt="JPEG")
    ds = load_calibration(str(tmp_path / "imgs"), image_model(("N", 1, 8, 8)))
    assert ds.preprocess.channels == "L"
    assert next(ds.batches(3))["x0"].shape == (3, 1, 8, 8)


def test_default_resize_ratio():
    pp = Preprocess().resolved((None, 3, 224, 224))
    assert (pp.resize, pp.crop, pp.layout, pp.channels) == (256, 224, "NCHW", "RGB")


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_preprocess_from_file(tmp_path, suffix):
    path = tmp_path / f"model.preprocess{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps({"resize": 256, "crop": 224, "mean": [127, 127, 127], "std": [128, 128, 128], "scale": 1.0, "layout": "NCHW", "channels": "RGB"}))
    else:
        path.write_text('resize = 256\ncrop = 224\nmean = [127, 127, 127]\nstd = [128, 128, 128]\nscale = 1.0\nlayout = "NCHW"\nchannels = "RGB"\n')
    pp = Preprocess.from_file(path)
    assert pp == Preprocess(resize=256, crop=224, mean=(127.0,) * 3, std=(128.0,) * 3, scale=1.0, layout="NCHW", channels="RGB")


def test_preprocess_file_used_by_loader(tmp_path):
    write_images(tmp_path / "imgs", 1)
    pfile = tmp_path / "m.preprocess.json"
    pfile.write_text(json.dumps({"scale": 1.0, "mean": 100}))
    x = next(load_calibration(str(tmp_path / "imgs"), image_model(), preprocess_file=pfile).batches(1))["x0"]
    assert x.min() < -50  # pixels - 100 on the 0..255 scale


def test_bad_preprocess_files(tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text('{"resize": 256, "colour": "x"}')
    with pytest.raises(SlimError, match="unknown preprocess keys"):
        Preprocess.from_file(bad)
    bad.write_text("{not json")
    with pytest.raises(SlimError, match="cannot parse"):
        Preprocess.from_file(bad)
    with pytest.raises(SlimError, match="layout"):
        Preprocess(layout="CHW")
    with pytest.raises(SlimError, match="std"):
        Preprocess(std=(1, 0, 1))


def test_npy_and_npz(tmp_path):
    data = np.random.default_rng(0).standard_normal((10, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "a.npy", data)
    ds = load_calibration(str(tmp_path / "a.npy"), image_model(), size=7)
    assert ds.real and len(ds) == 7
    got = np.concatenate([b["x0"] for b in ds.batches(3)])
    np.testing.assert_array_equal(got, data[:7])
    np.savez(tmp_path / "b.npz", x0=data, x1=data * 2)
    ds2 = load_calibration(str(tmp_path / "b.npz"), image_model(inputs=2))
    b = next(ds2.batches(4))
    assert set(b) == {"x0", "x1"}
    np.testing.assert_array_equal(b["x1"], data[:4] * 2)


def test_random_dataset_is_deterministic_and_flagged():
    m = image_model()
    ds = load_calibration(None, m, size=5, seed=3)
    assert not ds.real and len(ds) == 5
    a = [b["x0"] for b in ds.batches(2)]
    b = [b["x0"] for b in load_calibration(None, m, size=5, seed=3).batches(2)]
    assert [x.shape for x in a] == [(2, 3, 8, 8), (2, 3, 8, 8), (1, 3, 8, 8)]
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_fixed_batch_dim_is_respected(tmp_path):
    write_images(tmp_path / "imgs", 3)
    ds = load_calibration(str(tmp_path / "imgs"), image_model((1, 3, 8, 8)))
    assert [b["x0"].shape[0] for b in ds.batches(8)] == [1, 1, 1]


def test_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SlimError, match="no .jpg"):
        load_calibration(str(tmp_path / "empty"), image_model())
    write_images(tmp_path / "imgs", 2)
    with pytest.raises(SlimError, match="one input"):
        load_calibration(str(tmp_path / "imgs"), image_model(inputs=2))
    (tmp_path / "imgs" / "zz_broken.png").write_bytes(b"not a png at all")
    with pytest.raises(SlimError, match="zz_broken.png"):
        load_calibration(str(tmp_path / "imgs"), image_model())
    np.save(tmp_path / "wrong.npy", np.zeros((4, 3, 9, 9), np.float32))
    with pytest.raises(SlimError, match="wants 8"):
        load_calibration(str(tmp_path / "wrong.npy"), image_model())
    with pytest.raises(SlimError, match="no such"):
        load_calibration(str(tmp_path / "missing"), image_model())
    write_images(tmp_path / "imgs2", 1)
    with pytest.raises(SlimError, match="does not match"):
        load_calibration(str(tmp_path / "imgs2"), image_model(), preprocess=Preprocess(crop=6))
    for err in [SlimError("x")]:
        assert "\n" not in str(err)
