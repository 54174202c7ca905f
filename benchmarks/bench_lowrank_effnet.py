"""EfficientNet-Lite0 at 70% of its MACs with low-rank splits alone and with pruning + low-rank (issue 5).
One JSON line per result: top-1 and agreement on images 64..299, MACs ratio, latency ratio (batch 1).

    python benchmarks/bench_lowrank_effnet.py [--target 0.7] [--prune-first 0.85]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import imagenet  # noqa: E402

from onnxslim.calibration import ArrayDataset  # noqa: E402
from onnxslim.context import Context  # noqa: E402
from onnxslim.cost import model_cost  # noqa: E402
from onnxslim.graph import load_model  # noqa: E402
from onnxslim.passes import cleanup  # noqa: E402
from onnxslim.passes.lowrank import LowRankConfig, run as lowrank  # noqa: E402
from onnxslim.passes.prune import PruneConfig, run as prune  # noqa: E402
from onnxslim.progress import silent  # noqa: E402
from onnxslim.runtime import paired_latency, session  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", type=float, default=0.7, help="whole-model MACs fraction")
    ap.add_argument("--prune-first", type=float, default=0.85, help="MACs fraction pruning reaches before low-rank")
    args = ap.parse_args()
    x, labels = imagenet.images()
    ctx = Context(calibration=ArrayDataset({"input": x[:imagenet.CALIB]}, "first 64 images"), progress=silent)
    ev, ev_labels = x[imagenet.CALIB:], labels[imagenet.CALIB:]
    original = load_model(imagenet.MODELS / "efficientnet_lite0.onnx")
    total = model_cost(original)["macs"]
    ref = imagenet.predict(session(original), ev).argmax(1)
    clean = cleanup.run(original).model

    def conv_fraction(model, whole_target):
        """The low-rank pass budgets the factorized kinds' MACs: translate a whole-model target."""
        costs = model_cost(model)
        conv = sum(n["macs"] or 0 for n in costs["per_node"] if n["op_type"] in ("Conv", "Gemm"))
        other = costs["macs"] - conv
        return max(0.05, min(1.0, (whole_target * total - other) / conv))

    def line(name, model, seconds, extra=None):
        top1 = imagenet.predict(session(model), ev).argmax(1)
        before, after, runs = paired_latency(session(original), session(model), {"input": ev[:1]}, budget_s=15)
        print(json.dumps({"model": name, "top1": round(float((top1 == ev_labels).mean()), 4),
                          "agreement": round(float((top1 == ref).mean()), 4),
                          "macs_ratio": round(model_cost(model)["macs"] / total, 4),
                          "latency_ratio_b1": round(after / before, 3), "seconds": round(seconds, 1), **(extra or {})}), flush=True)

    for data_aware in (False, True):
        start = time.perf_counter()
        result = lowrank(clean, LowRankConfig(target_macs=conv_fraction(clean, args.target), ops=("conv", "gemm"),
                                              data_aware=data_aware), ctx)
        line(f"low-rank alone ({'data-aware' if data_aware else 'weight SVD'})", result.model, time.perf_counter() - start,
             {"factorized": result.report.get("factorized")})
    start = time.perf_counter()
    pruned = prune(clean, PruneConfig(target_macs=args.prune_first, importance="reconstruction", allocation="sensitivity",
                                      round_to=16), ctx).model
    result = lowrank(pruned, LowRankConfig(target_macs=conv_fraction(pruned, args.target), ops=("conv", "gemm")), ctx)
    line(f"prune to {args.prune_first} + low-rank (data-aware)", result.model, time.perf_counter() - start,
         {"factorized": result.report.get("factorized")})


if __name__ == "__main__":
    main()
