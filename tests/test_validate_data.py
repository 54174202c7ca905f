"""Validation on real data (issue 11): metrics that fit each output kind, image folders and labels for
--data, top-1/top-5 accuracy before and after, --val-size, and random inputs said to check structure only."""
from __future__ import annotations

import numpy as np
import pytest

from onnxslim import metrics, runtime, validate, validation_table
from onnxslim.calibration import load_calibration
from onnxslim.errors import SlimError
from onnxslim.labels import accuracy, load_labels
from onnxslim.output_kinds import (nearest_neighbour_agreement, output_kind, pixel_argmax_agreement,
                                   token_cosine)
from onnxslim.pipeline import optimize
from onnxslim.progress import silent
from test_data_checks import classifier, write_images


def test_output_kinds():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 10)).astype(np.float32)
    unit = logits / np.linalg.norm(logits, axis=1, keepdims=True)
    assert output_kind("logits", logits) == "scores"
    assert output_kind("logits", unit) == "embedding"  # normalized rows
    assert output_kind("sentence_embedding", logits) == "embedding"  # the name says so
    assert output_kind("hidden", rng.normal(size=(2, 5, 8)).astype(np.float32)) == "sequence"
    assert output_kind("seg", rng.normal(size=(2, 3, 4, 4)).astype(np.float32)) == "dense"
    assert output_kind("ids", np.zeros((2, 3), np.int64)) == "other"


def test_nearest_neighbour_agreement():
    x = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    assert nearest_neighbour_agreement(x, x) == 1.0
    swapped = np.array([[1, 0], [0.1, 0.9], [0, 1], [0.9, 0.1]], np.float32)  # 1 and 3 trade places
    # under `swapped`: 0's nearest is 3, 1's is 2, 2's is 1, 3's is 0; before: 1, 0, 3, 2
    assert nearest_neighbour_agreement(x, swapped) == 0.0


def test_pixel_and_token_metrics():
    a = np.zeros((1, 2, 2, 2), np.float32)
    a[0, 0] = 1  # class 0 everywhere
    b = a.copy()
    b[0, 1, 0, 0] = 2  # one of four pixels flips to class 1
    assert pixel_argmax_agreement(a, b) == 0.75
    s = np.array([[[1, 0], [0, 1]]], np.float32)
    t = np.array([[[1, 0], [1, 0]]], np.float32)  # second token orthogonal
    assert token_cosine(s, t) == pytest.approx(0.5)


def test_compare_outputs_uses_the_metric_of_the_kind():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(8, 16))
    ref = [{"sentence_embedding": emb, "logits": emb[:, :5]}]
    new = [{"sentence_embedding": emb + 0.01, "logits": emb[:, :5]}]
    m = metrics.compare_outputs(ref, new)
    assert "top1_agreement" not in m["sentence_embedding"] and m["sentence_embedding"]["nn_agreement"] == 1.0
    assert m["logits"]["top1_agreement"] == 1.0 and m["logits"]["kind"] == "scores"
    table = validation_table.format_report_table({"outputs": m})
    assert "nearest-neighbour agree 100.0%" in table and table.count("top-1 agree") == 1


def test_accuracy_top1_top5():
    scores = np.tile(np.arange(10, dtype=np.float32), (3, 1))  # argmax 9, top-5 = 5..9
    acc = accuracy(scores, np.array([9, 5, 0]))
    assert acc["top1"] == pytest.approx(1 / 3) and acc["top5"] == pytest.approx(2 / 3)


def test_labels_from_a_tsv_with_header_and_from_class_folders(tmp_path):
    folder = write_images(tmp_path / "flat", 4)
    tsv = tmp_path / "labels.tsv"
    tsv.write_text("file\tclass_index\tname\n" + "".join(f"img{i:02d}.png\t{i + 3}\tx\n" for i in range(4)))
    data = load_calibration(str(folder), classifier())
    assert load_labels(tsv, data).tolist() == [3, 4, 5, 6]
    tsv.write_text("img00.png\t1\n")
    with pytest.raises(SlimError, match="no label for 3 image"):
        load_labels(tsv, data)
    write_images(tmp_path / "byclass" / "7", 2)
    write_images(tmp_path / "byclass" / "2", 3, seed=1)
    data = load_calibration(str(tmp_path / "byclass"), classifier())
    assert len(data) == 5 and load_labels(None, data).tolist() == [2, 2, 2, 7, 7]


def test_image_folder_data_with_labels_gives_accuracy_before_and_after(tmp_path):
    folder = write_images(tmp_path / "imgs", 20)
    model = classifier()
    data = load_calibration(str(folder), model)
    preds = runtime.run(model, list(data.batches(8)))
    predicted = np.concatenate([p["logits"] for p in preds]).argmax(1)
    labels = tmp_path / "labels.tsv"
    truth = predicted.copy()
    truth[:5] = (truth[:5] + 1) % 10  # 15 of 20 right
    labels.write_text("".join(f"img{i:02d}.png\t{c}\n" for i, c in enumerate(truth)))
    report = optimize(model, data=str(folder), labels=str(labels), latency=False, progress=silent, val_size=16).report["validation"]
    assert report["top1_accuracy"]["before"] == pytest.approx(11 / 16) == report["top1_accuracy"]["after"]
    assert report["top1_accuracy"]["samples"] == 16 and report["real_data"]
    assert "top-1 acc" in validation_table.format_report_table(report)


def test_npz_labels_and_val_size(tmp_path):
    x = np.random.default_rng(0).normal(0, 1, (30, 3, 8, 8)).astype(np.float32)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, labels=np.arange(30) % 10)
    report = optimize(classifier(), data=str(path), latency=False, progress=silent, val_size=12,
                      check_data=False).report["validation"]
    assert report["top1_accuracy"]["samples"] == 12 and "12 samples" in report["data"]


def test_random_inputs_say_they_check_structure_not_accuracy():
    report = optimize(classifier(), latency=False, progress=silent).report["validation"]
    assert "structure" in report["data"] and "not accuracy" in report["data"] and report["real_data"] is False


def test_val_size_and_threads_below_one_are_refused_before_loading():
    for kw, flag in (({"val_size": 0}, "--val-size 0"), ({"threads": 0}, "--threads 0")):
        with pytest.raises(SlimError, match=f"{flag}: give at least 1"):
            optimize("no-such-model.onnx", progress=silent, **kw)
