"""Latency of optimized models against their original, measured interleaved in one run (batch 1, one
onnxruntime thread unless --threads), one JSON line per model (ratio_iqr: quartiles of the per-block ratios, the spread of the measurement):

    python benchmarks/bench_latency.py ../shared/models/efficientnet_lite0.onnx /tmp/grid/models/*.onnx

Models saved by bench_prune_calibration.py --save are measured here, so the pruning runs (which share the
cores with other work) and the timing (best on a quiet machine) can happen at different times.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from onnxslim.cost import model_cost  # noqa: E402
from onnxslim.graph import load_model  # noqa: E402
from onnxslim.inputs import random_feeds  # noqa: E402
from onnxslim.runtime import paired_latency, session  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("original")
    ap.add_argument("models", nargs="+")
    ap.add_argument("--budget", type=float, default=15.0, help="seconds of timing per model pair")
    ap.add_argument("--threads", type=int, default=1,
                    help="onnxruntime intra-op threads (default 1: on 2 shared cores, 2-thread timings of the same pair "
                         "ranged 0.70-0.86x run to run, 1-thread ones 0.71-0.72x; 0 = onnxruntime's default)")
    args = ap.parse_args()
    original = load_model(args.original)
    base = session(original, threads=args.threads or None)
    feed = random_feeds(original)[0]  # batch 1; latency does not depend on the values
    base_macs = model_cost(original)["macs"]
    for path in args.models:
        model = load_model(path)
        before, after, runs, spread = paired_latency(base, session(model, threads=args.threads or None), feed, budget_s=args.budget)
        print(json.dumps({"model": Path(path).name, "macs_ratio": round(model_cost(model)["macs"] / base_macs, 4),
                          "latency_ratio_b1": round(after / before, 3), "ratio_iqr": [round(q, 3) for q in spread],
                          "original_ms": round(before * 1e3, 2), "runs": runs, "threads": args.threads}), flush=True)


if __name__ == "__main__":
    main()
