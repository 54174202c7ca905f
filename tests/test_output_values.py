"""Validation compares outputs of any kind: strings, sequences, bfloat16, empty tensors."""
import ml_dtypes
import numpy as np

from onnxslim.metrics import compare_outputs


def _cos(a, b):
    return compare_outputs([{"y": a}], [{"y": b}])["y"]["cosine"]


def test_equal_strings_match_and_a_changed_one_shows():
    a = np.array(["a", "bc", "def"], dtype=object)
    assert _cos(a, a.copy()) == 1.0
    assert _cos(a, np.array(["a", "bc", "x"], dtype=object)) < 1.0
    # same set of values, different places: a per-array code table would call these equal
    assert _cos(np.array(["a", "b"], dtype=object), np.array(["b", "a"], dtype=object)) < 1.0


def test_sequences_bfloat16_and_empty_outputs():
    seq = [np.ones(3, np.float32), np.arange(2, dtype=np.float32)]
    assert _cos(seq, [s.copy() for s in seq]) > 1 - 1e-12
    assert _cos(seq, [seq[0], seq[1] + 1]) < 1.0
    bf = np.arange(6, dtype=np.float32).reshape(2, 3).astype(ml_dtypes.bfloat16)
    assert compare_outputs([{"y": bf}], [{"y": bf.copy()}])["y"]["max_abs_error"] == 0.0
    report = compare_outputs([{"y": np.zeros((0, 3), np.float32)}], [{"y": np.zeros((0, 3), np.float32)}])
    assert report["y"]["cosine"] == 1.0 and report["y"]["max_abs_error"] == 0.0
