"""Calibration-driven pruning benchmark: EfficientNet-Lite0 on ImageNet sample images, and the digits ResNet.

For every (importance, allocation) combination and MACs target, runs the pass once with repair and prints
two JSON lines (with the repair, and the same plan without it): top-1 on the
evaluation images, agreement with the original model's top-1, measured MACs fraction, calibration fidelity
before/after repair, and the wall time of calibrate + prune + repair (cleanup and evaluation excluded).

    python benchmarks/bench_prune_calibration.py efficientnet --combos reconstruction:sensitivity
    python benchmarks/bench_prune_calibration.py efficientnet --combos all --search-time 30
    python benchmarks/bench_prune_calibration.py digits --combos all
    python benchmarks/bench_prune_calibration.py efficientnet --combos reconstruction:sensitivity --budget latency

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
from onnxslim.runtime import session  # noqa: E402

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


ALL_IMPORTANCE = ("l1", "l2", "random", "bn", "activation", "apoz", "hrank", "reconstruction")
ALL_ALLOCATION = ("uniform", "global", "sensitivity", "search")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("which", choices=["efficientnet", "digits"])
    parser.add_argument("--model")
    parser.add_argument("--bn-model", help="model with BatchNormalization kept, for importance bn (efficientnet only)")
    parser.add_argument("--data")
    parser.add_argument("--calib-size", type=int, default=64)
    parser.add_argument("--targets", default="0.9,0.8,0.7,0.5")
    parser.add_argument("--combos", default="reconstruction:sensitivity",
                        help="comma list of importance:allocation, or 'all' (every importance x allocation); each run "
                             "repairs and prints two lines: with the repair and, for the same plan, without it")
    parser.add_argument("--round-to", type=int, default=None)
    parser.add_argument("--search-time", type=float, default=60.0)
    parser.add_argument("--latency", action="store_true", help="also measure the latency ratio (batch 1, 1 thread, alternating blocks)")
    parser.add_argument("--budget", choices=("macs", "latency"), default="macs",
                        help="targets are fractions of the MACs (--target-macs) or of the profiled latency (--target-latency)")
    parser.add_argument("--save", help="folder to save each repaired model in (IMPORTANCE_ALLOCATION_TARGET.onnx)")
    parser.add_argument("--set", action="append", default=[], help="extra PruneConfig field=value")
    parser.add_argument("--workdir", default="/tmp/bench_prune_calibration")
    args = parser.parse_args()
    model, calibration, inputs, truth, shape = (efficientnet_setup if args.which == "efficientnet" else digits_setup)(args)
    bn_model = None
    if args.which == "efficientnet":
        bn_path = args.bn_model or ROOT / "../shared/models/efficientnet_lite0_bn.onnx"
        if Path(bn_path).exists():
            bn_model = cleanup.run(onnx.load(str(bn_path)), cleanup.CleanupConfig(fold_bn=False)).model
    else:
        bn_model = cleanup.run(onnx.load(str(ROOT / "models/digits_resnet.onnx")), cleanup.CleanupConfig(fold_bn=False)).model
    base_pred = predictions(model, inputs)
    base_macs = macs_of(model, shape)
    print(json.dumps({"model": args.which, "baseline_top1": round(float((base_pred == truth).mean()), 4),
                      "eval_images": len(truth), "calib_images": len(calibration), "macs": base_macs}), flush=True)
    extra = {}
    for item in args.set:
        key, value = item.split("=", 1)
        extra[key] = json.loads(value)
    combos = [f"{i}:{a}" for a in ALL_ALLOCATION for i in ALL_IMPORTANCE] if args.combos == "all" else args.combos.split(",")
    for combo in combos:
        importance, allocation = combo.split(":")[:2]
        source = bn_model if importance == "bn" else model
        if source is None:
            print(json.dumps({"model": args.which, "importance": importance, "error": "no BatchNormalization model"}), flush=True)
            continue
        for target in [float(t) for t in args.targets.split(",")]:
            config = PruneConfig(**{f"target_{args.budget}": target}, importance=importance, allocation=allocation, repair=True,
                                 search_time=args.search_time, **extra)
            if args.round_to:
                config.round_to = args.round_to
            head = {"model": args.which, "importance": importance, "allocation": allocation, f"target_{args.budget}": target}
            start = time.perf_counter()
            try:
                result = run(source, config, Context(calibration=calibration, progress=silent))
            except Exception as err:  # one failing combination must not hide the others
                print(json.dumps({**head, "error": f"{type(err).__name__}: {err}"}), flush=True)
                continue
            seconds = time.perf_counter() - start
            fidelity = result.report.get("fidelity", {})
            repair_seconds = fidelity.get("repair_seconds", 0.0)
            kept = {g["group"]: g["after"] for g in result.report["pruned_groups"]}
            if args.save:
                Path(args.save).mkdir(parents=True, exist_ok=True)
                tag = "" if args.budget == "macs" else "lat"
                onnx.save(result.model, str(Path(args.save) / f"{importance}_{allocation}_{tag}{target:g}.onnx"))
            for repaired, pruned in ((True, result.model), (False, result.extras["unrepaired"])):
                pred = predictions(pruned, inputs)
                line = {**head, "repair": repaired, "macs_fraction": round(macs_of(pruned, shape) / base_macs, 4),
                        "top1": round(float((pred == truth).mean()), 4), "agreement": round(float((pred == base_pred).mean()), 4),
                        # without repair: the same run less the refit (calibration and allocation are shared)
                        "seconds": round(seconds if repaired else seconds - repair_seconds, 1),
                        "calib_loss_before_repair": fidelity.get("before_repair", {}).get("loss"),
                        "calib_loss_after_repair": fidelity.get("after_repair", {}).get("loss") if repaired else None}
                if args.latency:
                    from onnxslim.runtime import paired_latency
                    before, after, _, _ = paired_latency(session(source, threads=1), session(pruned, threads=1), {"input": inputs[:1]}, budget_s=8)
                    line["latency_ratio_b1"] = round(after / before, 3)
                if "latency_model" in result.report:
                    line["estimated_latency_fraction"] = result.report["latency_model"]["estimated_fraction"]
                print(json.dumps({**line, "kept": kept, **extra}), flush=True)


if __name__ == "__main__":
    main()
