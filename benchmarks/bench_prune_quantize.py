"""Pruned + int8 EfficientNet-Lite0 (issue 4 goal: int8 loses at most 1 point of top-1 more than the pruned
float model) and the pruned model's latency against the original (issue 3 goal). One JSON line per model.

    python benchmarks/bench_prune_quantize.py [--target 0.7] [--round-to 8]

Calibration: the first 64 images (sorted file order) of ../shared/data/imagenet-dev; evaluation: the other 236.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # measured 3-15x faster Gram solves on 2 busy cores

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import imagenet  # noqa: E402

from onnxslim.calibration import ArrayDataset  # noqa: E402
from onnxslim.context import Context  # noqa: E402
from onnxslim.cost import model_cost  # noqa: E402
from onnxslim.graph import load_model  # noqa: E402
from onnxslim.passes import cleanup  # noqa: E402
from onnxslim.passes.prune import PruneConfig, run as prune  # noqa: E402
from onnxslim.passes.quantize import QuantizeConfig, run as quantize  # noqa: E402
from onnxslim.progress import silent  # noqa: E402
from onnxslim.runtime import paired_latency, session  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", type=float, default=0.7)
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--allocation", default="sensitivity")
    args = ap.parse_args()
    x, labels = imagenet.images()
    calib = ArrayDataset({"input": x[:imagenet.CALIB]}, "first 64 images", None, None)
    ev, ev_labels = x[imagenet.CALIB:], labels[imagenet.CALIB:]
    original = load_model(imagenet.MODELS / "efficientnet_lite0.onnx")
    ref = imagenet.predict(session(original), ev).argmax(1)

    def line(name, model, seconds):
        top1 = imagenet.predict(session(model), ev).argmax(1)
        before, after, runs, _ = paired_latency(session(original, threads=1), session(model, threads=1), {"input": ev[:1]}, budget_s=15)
        print(json.dumps({"model": name, "top1": round(float((top1 == ev_labels).mean()), 4),
                          "agreement": round(float((top1 == ref).mean()), 4),
                          "macs_ratio": round(model_cost(model)["macs"] / model_cost(original)["macs"], 4),
                          "latency_ratio_b1": round(after / before, 3), "latency_runs": runs, "seconds": round(seconds, 1)}), flush=True)

    ctx = Context(calibration=calib, progress=silent)
    start = time.perf_counter()
    clean = cleanup.run(original).model
    pruned = prune(clean, PruneConfig(target_macs=args.target, importance="reconstruction", allocation=args.allocation,
                                      round_to=args.round_to), ctx).model
    line(f"pruned {args.target} ({args.allocation}, round-to {args.round_to})", pruned, time.perf_counter() - start)
    start = time.perf_counter()
    quantized = quantize(pruned, QuantizeConfig(), ctx).model
    line(f"pruned {args.target} + int8", quantized, time.perf_counter() - start)
    start = time.perf_counter()
    line("int8 alone", quantize(clean, QuantizeConfig(), ctx).model, time.perf_counter() - start)


if __name__ == "__main__":
    main()
