"""Class labels for validation data, and top-1/top-5 accuracy of a model's class scores against them.

Where labels come from (first that applies):
- `--labels FILE`: for an image folder, lines `file<TAB>class index` (more columns and a header line are
  fine, e.g. `file class_index name`); for arrays, a .npy of ints or one `class` (or `anything<TAB>class`)
  per line, in sample order;
- an image folder with one sub-folder per class (see calibration._image_files);
- a `labels` array in the .npz.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import SlimError
from .output_kinds import output_kind


def load_labels(path: str | Path | None, dataset, data_path: str | Path | None = None) -> np.ndarray | None:
    """Labels for the samples of `dataset` in order, or None when there are none."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise SlimError(f"--labels {path}: no such file")
        files = getattr(dataset, "files", None)
        labels = _by_file(path, files) if files is not None else _in_order(path)
    elif getattr(dataset, "classes", None):
        labels = np.asarray(dataset.classes, dtype=np.int64)
    elif data_path is not None and Path(data_path).suffix == ".npz":
        with np.load(data_path, allow_pickle=False) as npz:
            if "labels" not in npz.files:
                return None
            labels = np.asarray(npz["labels"])
        if not np.issubdtype(labels.dtype, np.integer) or labels.ndim != 1:
            raise SlimError(f"{data_path}: 'labels' must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    else:
        return None
    if len(labels) < len(dataset):
        raise SlimError(f"labels: {len(labels)} labels for {len(dataset)} samples")
    return labels[:len(dataset)].astype(np.int64)


def _rows(path: Path) -> list[list[str]]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise SlimError(f"--labels {path}: cannot read ({type(err).__name__})") from None
    return [line.split("\t") if "\t" in line else line.split() for line in text.splitlines() if line.strip()]


def _int(value: str) -> int | None:
    value = value.strip()
    return int(value) if value.lstrip("-").isdigit() else None


def _by_file(path: Path, files) -> np.ndarray:
    # a header line has no integer class
    table = {Path(row[0].strip()).name: _int(row[1]) for row in _rows(path) if len(row) >= 2 and _int(row[1]) is not None}
    if not table:
        raise SlimError(f"--labels {path}: no `file<TAB>class index` lines")
    missing = [f.name for f in files if f.name not in table]
    if missing:
        raise SlimError(f"--labels {path}: no label for {len(missing)} image(s), e.g. {missing[0]}")
    return np.array([table[f.name] for f in files], dtype=np.int64)


def _in_order(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        try:
            labels = np.load(path, allow_pickle=False)
        except Exception as err:
            raise SlimError(f"--labels {path}: cannot read ({type(err).__name__})") from None
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise SlimError(f"--labels {path}: expected a 1-D integer array, got {labels.dtype} {labels.shape}")
        return labels
    values = [_int(row[-1] if len(row) == 1 else row[1]) for row in _rows(path)]
    if values and values[0] is None:  # header
        values = values[1:]
    if not values or any(v is None for v in values):
        raise SlimError(f"--labels {path}: expected one integer class per line (or `name<TAB>class`)")
    return np.array(values, dtype=np.int64)


def accuracy(scores: np.ndarray, labels: np.ndarray) -> dict:
    """{"top1": fraction, "top5": fraction (when there are more than 5 classes)} of `scores` [N, C]."""
    out = {"top1": float(np.mean(scores.argmax(1) == labels))}
    if scores.shape[1] > 5:
        top5 = np.argpartition(-scores, 4, axis=1)[:, :5]
        out["top5"] = float(np.mean(np.any(top5 == labels[:, None], axis=1)))
    return out


def label_accuracy(ref: list[dict], new: list[dict], labels: np.ndarray) -> dict:
    """top1_accuracy / top5_accuracy report sections {"before", "after", "ratio", "output", "samples"} for the
    first class-score output whose classes cover the labels (lists of per-batch output dicts); {} if none."""
    for name in ref[0] if ref else []:
        a = np.concatenate([r[name] for r in ref])
        if output_kind(name, a) != "scores" or int(labels.max()) >= a.shape[1]:
            continue
        b = np.concatenate([n[name] for n in new])
        before, after = accuracy(a, labels[:len(a)]), accuracy(b, labels[:len(b)])
        return {f"{k}_accuracy": {"before": before[k], "after": after[k], "output": name, "samples": len(a),
                                  "ratio": after[k] / before[k] if before[k] else None} for k in before}
    return {}
