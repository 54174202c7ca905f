"""Weight-importance pruning of EfficientNet-Lite0 (issue 2): top-1 and agreement on the shared ImageNet
sample, latency ratio on onnxruntime CPU, and the tool's own run time; one JSON line per result.

    python benchmarks/bench_prune.py [--round-to 1 8 16] [--targets 0.7 0.5]

Evaluated on images 64..299 (sorted file order) of ../shared/data/imagenet-dev (the first 64 are the
calibration split of the calibration benchmarks). No calibration data is used here.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
import imagenet  # noqa: E402

from onnxslim.cost import model_cost  # noqa: E402
from onnxslim.graph import load_model  # noqa: E402
from onnxslim.passes import cleanup  # noqa: E402
from onnxslim.passes.prune import PruneConfig, run as prune  # noqa: E402
from onnxslim.runtime import paired_latency, session  # noqa: E402

ort.set_default_logger_severity(3)


def evaluate(model, x, labels, reference_top1):
    logits = imagenet.predict(session(model), x)
    top1 = logits.argmax(1)
    return float((top1 == labels).mean()), float((top1 == reference_top1).mean())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=Path, default=imagenet.MODELS)
    ap.add_argument("--data", type=Path, default=imagenet.DATA)
    ap.add_argument("--targets", type=float, nargs="+", default=[0.7, 0.5])
    ap.add_argument("--round-to", type=int, nargs="+", default=[1, 8, 16])
    ap.add_argument("--latency-budget", type=float, default=12.0)
    args = ap.parse_args()

    x_all, labels_all = imagenet.images(args.data, args.models / "efficientnet_lite0.onnx")
    x, labels = x_all[imagenet.CALIB:], labels_all[imagenet.CALIB:]
    one = x[:1]
    cases = [("efficientnet_lite0.onnx", "l1", r) for r in args.round_to]
    cases += [("efficientnet_lite0_bn.onnx", "bn", r) for r in args.round_to if r == 8]
    references = {}
    for file, importance, round_to in cases:
        original = load_model(args.models / file)
        if file not in references:
            logits = imagenet.predict(session(original), x)
            references[file] = logits.argmax(1)
            print(json.dumps({"model": file, "config": "original", "top1": float((references[file] == labels).mean()),
                              "macs": model_cost(original)["macs"]}), flush=True)
        for target in args.targets:
            start = time.perf_counter()
            clean = cleanup.run(original, cleanup.CleanupConfig(fold_bn=importance != "bn")).model
            t_clean = time.perf_counter() - start
            result = prune(clean, PruneConfig(target_macs=target, importance=importance, round_to=round_to))
            t_total = time.perf_counter() - start
            pruned = result.model
            top1, agree = evaluate(pruned, x, labels, references[file])
            before, after, runs = paired_latency(session(original), session(pruned), {"input": one}, budget_s=args.latency_budget)
            print(json.dumps({
                "model": file, "importance": importance, "target_macs": target, "round_to": round_to,
                "macs_ratio": round(model_cost(pruned)["macs"] / model_cost(clean)["macs"], 4),
                "top1": round(top1, 4), "agreement": round(agree, 4),
                "latency_ratio_b1": round(after / before, 3), "latency_ms_b1": [round(before * 1e3, 2), round(after * 1e3, 2)],
                "latency_runs": runs, "tool_seconds": round(t_total, 2), "cleanup_seconds": round(t_clean, 2),
            }), flush=True)


if __name__ == "__main__":
    main()
