"""The shared ImageNet sample (../shared/data/imagenet-dev) as arrays for benchmarks: preprocessed once
with onnxslim's own image loader (EfficientNet-Lite0 preprocessing) and cached under benchmarks/out/."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from onnxslim.calibration import Preprocess, load_calibration
from onnxslim.graph import load_model

REPO = Path(__file__).resolve().parent.parent
# ../shared next to the checkout; ONNXSLIM_SHARED points elsewhere (e.g. from a git worktree)
SHARED = Path(os.environ.get("ONNXSLIM_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data" / "imagenet-dev"
MODELS = SHARED / "models"
OUT = REPO / "benchmarks" / "out"
EFFNET_PREPROCESS = Preprocess(resize=256, crop=224, mean=(127.0,), std=(128.0,), scale=1.0, layout="NCHW", channels="RGB")
CALIB = 64  # the first 64 images (sorted file order) calibrate; the other 236 evaluate


def images(data_dir: Path = DATA, model_path: Path = MODELS / "efficientnet_lite0.onnx"):
    """(x [300,3,224,224] float32, labels [300] int64) in sorted file order."""
    OUT.mkdir(parents=True, exist_ok=True)
    cache = OUT / "imagenet_dev_effnet.npz"
    if cache.exists():
        with np.load(cache) as z:
            return z["x"], z["labels"]
    labels_by_file = {}
    for line in (Path(data_dir) / "labels.tsv").read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[1].strip().isdigit():
            labels_by_file[parts[0]] = int(parts[1])
    dataset = load_calibration(str(data_dir), load_model(model_path), preprocess=EFFNET_PREPROCESS)
    x = np.concatenate([b["input"] for b in dataset.batches(32)])
    files = sorted(p.name for p in Path(data_dir).iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    labels = np.array([labels_by_file[f] for f in files], dtype=np.int64)
    assert len(labels) == len(x)
    np.savez(cache, x=x, labels=labels)
    return x, labels


def predict(session, x: np.ndarray, batch: int = 16) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])
