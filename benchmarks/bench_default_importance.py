"""Issue 11: --importance auto (chosen on held-out calibration samples, then rebuilt on all) against l1 and
reconstruction, EfficientNet-Lite0 with --calib and --target-macs, sensitivity allocation and repair.

    python benchmarks/bench_default_importance.py --target 0.8 [--methods auto,l1,reconstruction]

Calibration (everything tuned or chosen): the first 64 images (sorted file order) of
../shared/data/imagenet-dev; auto splits them 48 fit / 16 held out to choose, then rebuilds on all 64.
Evaluation, once: the other 236.
One JSON line per method.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the CLI sets it

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import imagenet  # noqa: E402

from onnxslim.calibration import ArrayDataset  # noqa: E402
from onnxslim.context import Context  # noqa: E402
from onnxslim.cost import model_cost  # noqa: E402
from onnxslim.graph import load_model  # noqa: E402
from onnxslim.passes import cleanup  # noqa: E402
from onnxslim.passes.prune import PruneConfig, run as prune  # noqa: E402
from onnxslim.progress import silent  # noqa: E402
from onnxslim.runtime import session  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", type=float, default=0.7)
    ap.add_argument("--methods", default="auto,l1,reconstruction")
    ap.add_argument("--save", help="folder for the pruned models")
    args = ap.parse_args()
    x, labels = imagenet.images()
    ev, ev_labels = x[imagenet.CALIB:], labels[imagenet.CALIB:]
    original = load_model(imagenet.MODELS / "efficientnet_lite0.onnx")
    ref = imagenet.predict(session(original), ev).argmax(1)
    clean = cleanup.run(original).model
    for method in args.methods.split(","):
        calib = ArrayDataset({"input": x[:imagenet.CALIB]}, "first 64 images", None, None)
        start = time.perf_counter()
        result = prune(clean, PruneConfig(target_macs=args.target, importance=method),
                       Context(calibration=calib, progress=silent))
        seconds = time.perf_counter() - start
        top1 = imagenet.predict(session(result.model), ev).argmax(1)
        if args.save:
            Path(args.save).mkdir(parents=True, exist_ok=True)
            import onnx
            onnx.save(result.model, str(Path(args.save) / f"{method}_{args.target}.onnx"))
        print(json.dumps({"method": method, "target": args.target, "chosen": result.report["importance"],
                          "choice": result.report.get("importance_choice"),
                          "top1_eval236": round(float((top1 == ev_labels).mean()), 4),
                          "agreement_eval236": round(float((top1 == ref).mean()), 4),
                          "macs_ratio": round(model_cost(result.model)["macs"] / model_cost(original)["macs"], 4),
                          "seconds": round(seconds, 1)}), flush=True)


if __name__ == "__main__":
    main()
