"""Calibration-driven pruning benchmark: EfficientNet-Lite0 on ImageNet sample images, and the digits ResNet.

For every (importance, allocation, repair) combination and MACs target, prints one JSON line: top-1 on the
evaluation images, agreement with the original model's top-1, measured MACs fraction, calibration fidelity
before/after repair, and the wall time of calibrate + prune + repair (cleanup and evaluation excluded).

    python benchmarks/bench_prune_calibration.py efficientnet --combos reconstruction:sensitivity:1
    python benchmarks/bench_prune_calibration.py digits

Paths default to ../shared relative to the repo root. Split: the first 64 images in sorted file order
calibrate, the other 236 evaluate (labels.tsv).
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # BLAS threads fight onnxruntime's on 2 cores (5-15x slower)

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnxslim.calibration import Preprocess, load_calibration  # noqa: E402
from onnxslim.context import Context  # noqa: E402
from onnxslim.cost import model_cost  # noqa: E402
from onnxslim.passes import cleanup  # noqa: E402
from onnxslim.passes.prune import PruneConfig, run  # noqa: E402
from onnxslim.progress import silent  # noqa: E402
from onnxslim.validate import session  # noqa: E402

EFFNET_PRE = Preprocess(resize=256, crop=224, mean=(127.0,), std=(128.0,), scale=1.0, layout="NCHW", channels="RGB")


def predictions(model, inputs: np.ndarray, batch: int = 16) -> np.ndarray:
    sess = session(model)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: inputs[i:i + batch]})[0].argmax(1) for i in range(0, len(inputs), batch)])


def macs_of(model, shape) -> float:
    return float(model_cost(model, {"input": shape})["macs"])


def efficientnet_setup(args):
    model = cleanup.run(onnx.load(str(args.model or ROOT / "../shared/models/efficientnet_lite0.onnx"))).model
    data = Path(args.data or ROOT / "../shared/data/imagenet-dev")
    labels = {}
    for line in (data / "labels.tsv").read_text().splitlines()[1:]:
        name, index, _ = line.split("\t")
        labels[name] = int(index)
    files = sorted(p for p in data.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    calib_dir = Path(args.workdir) / "calib"
    calib_dir.mkdir(parents=True, exist_ok=True)
    for f in files[:args.calib_size]:  # a folder with just the calibration images, for load_calibration
        link = calib_dir / f.name
        if not link.exists():
            link.symlink_to(f.resolve())
    calibration = load_calibration(calib_dir, model, size=args.calib_size, preprocess=EFFNET_PRE)
    from PIL import Image
    evaluation = files[64:]
    inputs = np.stack([EFFNET_PRE.resolved((1, 3, 224, 224)).apply(Image.open(f)) for f in evaluation])
    truth = np.array([labels[f.name] for f in evaluation])
    return model, calibration, inputs, truth, (1, 3, 224, 224)


def digits_setup(args):
    model = cleanup.run(onnx.load(str(ROOT / "models/digits_resnet_folded.onnx"))).model
    calibration = load_calibration(ROOT / "models/digits_calib.npz", model)
    ev = np.load(ROOT / "models/digits_eval.npz")
    return model, calibration, ev["input"], ev["labels"], (1, 1, 8, 8)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("which", choices=["efficientnet", "digits"])
    parser.add_argument("--model")
    parser.add_argument("--data")
    parser.add_argument("--calib-size", type=int, default=64)
    parser.add_argument("--targets", default="0.9,0.8,0.7,0.5")
    parser.add_argument("--combos", default="l1:global:0,reconstruction:uniform:1,reconstruction:sensitivity:1",
                        help="comma list of importance:allocation:repair(0/1)")
    parser.add_argument("--round-to", type=int, default=None)
    parser.add_argument("--search-time", type=float, default=60.0)
    parser.add_argument("--set", action="append", default=[], help="extra PruneConfig field=value")
    parser.add_argument("--workdir", default="/tmp/bench_prune_calibration")
    args = parser.parse_args()
    model, calibration, inputs, truth, shape = (efficientnet_setup if args.which == "efficientnet" else digits_setup)(args)
    base_pred = predictions(model, inputs)
    base_macs = macs_of(model, shape)
    print(json.dumps({"model": args.which, "baseline_top1": round(float((base_pred == truth).mean()), 4),
                      "eval_images": len(truth), "calib_images": len(calibration), "macs": base_macs}), flush=True)
    extra = {}
    for item in args.set:
        key, value = item.split("=", 1)
        extra[key] = json.loads(value)
    for combo in args.combos.split(","):
        importance, allocation, repair = combo.split(":")
        for target in [float(t) for t in args.targets.split(",")]:
            config = PruneConfig(target_macs=target, importance=importance, allocation=allocation, repair=bool(int(repair)),
                                 search_time=args.search_time, **extra)
            if args.round_to:
                config.round_to = args.round_to
            start = time.perf_counter()
            try:
                result = run(model, config, Context(calibration=calibration, progress=silent))
            except Exception as err:  # one failing combination must not hide the others
                print(json.dumps({"model": args.which, "importance": importance, "allocation": allocation, "repair": bool(int(repair)),
                                  "target_macs": target, "error": f"{type(err).__name__}: {err}"}), flush=True)
                continue
            seconds = time.perf_counter() - start
            pred = predictions(result.model, inputs)
            fidelity = result.report.get("fidelity", {})
            print(json.dumps({
                "model": args.which, "importance": importance, "allocation": allocation, "repair": bool(int(repair)),
                "target_macs": target, "macs_fraction": round(macs_of(result.model, shape) / base_macs, 4),
                "top1": round(float((pred == truth).mean()), 4), "agreement": round(float((pred == base_pred).mean()), 4),
                "seconds": round(seconds, 1),
                "calib_loss_before_repair": fidelity.get("before_repair", {}).get("loss"),
                "calib_loss_after_repair": fidelity.get("after_repair", {}).get("loss"),
                "kept": {g["group"]: g["after"] for g in result.report["pruned_groups"]},
                **{k: v for k, v in extra.items()},
            }), flush=True)


if __name__ == "__main__":
    main()
