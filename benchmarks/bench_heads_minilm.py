"""Attention heads and FFN features of MiniLM-L6 pruned under one MACs budget (issue 13): calibration-driven
importance (reconstruction), allocation (sensitivity), least-squares repair, on the shared sentences.

Parts: `heads` (FFN frozen by --exclude of the FFN up-projections), `ffn` (heads frozen by --exclude of the
Q projections), `both`, `joint` (both, and low-rank splits of the weight MatMuls in the same budget:
--lowrank-in-budget, passes/joint). Calibration: the first --calib sentences; evaluation: all the others (held out).
One JSON line per run: MACs fraction of the whole model (batch 1, 64 tokens), mean / min cosine of
sentence_embedding to the original's, nearest-neighbour agreement, heads and FFN features kept per layer,
latency ratio (batch 1, 1 thread, interleaved), wall time and CPU time (user+sys of this process) of the pass;
for `joint` also the layers split and their ranks.

    python benchmarks/bench_heads_minilm.py --targets 0.9,0.7,0.5 --parts heads,ffn,both
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # BLAS threads fight onnxruntime's on 2 cores

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_prune_minilm import embeddings, nearest  # noqa: E402
from onnxslim.calibration import ArrayDataset  # noqa: E402
from onnxslim.context import Context  # noqa: E402
from onnxslim.cost import model_cost  # noqa: E402
from onnxslim.passes import cleanup  # noqa: E402
from onnxslim.passes.prune import PruneConfig, run  # noqa: E402
from onnxslim.progress import silent  # noqa: E402
from onnxslim.validate import paired_latency, session  # noqa: E402


def excluded(model, part: str) -> tuple:
    """Nodes whose exclusion freezes the other part: Q projections freeze their layer's heads, FFN
    up-projections their layer's FFN features."""
    names = [n.name for n in model.graph.node if n.op_type == "MatMul"]
    if part == "heads":
        return tuple(n for n in names if "intermediate/dense" in n)
    if part == "ffn":
        return tuple(n for n in names if "attention/self/query" in n)
    return ()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "../shared/models/minilm_l6.onnx"))
    ap.add_argument("--tokens", default=str(ROOT / "../shared/data/sentences/minilm_tokens.npz"))
    ap.add_argument("--calib", type=int, default=64)
    ap.add_argument("--targets", default="0.9,0.7,0.5")
    ap.add_argument("--parts", default="heads,ffn,both", help="heads, ffn, both, joint")
    ap.add_argument("--importance", default="reconstruction")
    ap.add_argument("--allocation", default="sensitivity")
    ap.add_argument("--round-to", type=int, default=16, help="FFN widths; a head group (12 units) is never rounded")
    ap.add_argument("--latency", action="store_true")
    args = ap.parse_args()
    tokens = dict(np.load(args.tokens))
    model = cleanup.run(onnx.load(args.model)).model
    names = [i.name for i in model.graph.input]
    tokens = {k: v for k, v in tokens.items() if k in names}
    calib = ArrayDataset({k: v[:args.calib] for k, v in tokens.items()}, f"first {args.calib} sentences", None, None)
    evaluation = {k: v[args.calib:] for k, v in tokens.items()}
    shapes = {k: (1, v.shape[1]) for k, v in tokens.items()}
    base = embeddings(model, evaluation)
    base_nn = nearest(base)
    base_macs = model_cost(model, shapes)["macs"]
    one = {k: v[:1] for k, v in evaluation.items()}
    print(json.dumps({"model": "minilm_l6", "calib_sentences": args.calib, "eval_sentences": len(base), "macs": base_macs}), flush=True)
    for part in args.parts.split(","):
        for target in (float(t) for t in args.targets.split(",")):
            config = PruneConfig(target_macs=target, importance=args.importance, allocation=args.allocation,
                                 repair=True, round_to=args.round_to, exclude=excluded(model, part),
                                 lowrank_in_budget=part == "joint")
            head = {"part": part, "target_macs": target, "importance": args.importance, "allocation": args.allocation}
            start, cpu = time.perf_counter(), time.process_time()
            try:
                result = run(model, config, Context(calibration=calib, progress=silent, input_shapes=shapes))
            except Exception as err:  # one failing run must not hide the others
                print(json.dumps({**head, "error": f"{type(err).__name__}: {err}"}), flush=True)
                continue
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            for repaired, pruned in ((True, result.model), (False, result.extras["unrepaired"])):
                emb = embeddings(pruned, evaluation)
                cos = np.sum(emb * base, 1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(base, axis=1)
                groups = result.report["pruned_groups"]
                line = {**head, "repair": repaired, "macs_fraction": round(model_cost(pruned, shapes)["macs"] / base_macs, 4),
                        "mean_cosine": round(float(cos.mean()), 4), "min_cosine": round(float(cos.min()), 4),
                        "nn_agreement": round(float((nearest(emb) == base_nn).mean()), 4),
                        "seconds": round(seconds, 1) if repaired else None, "cpu_seconds": round(cpu, 1) if repaired else None,
                        "heads_kept": {g["trace"].split("/")[3]: g["after"] for g in groups if g["before"] == 12},
                        "ffn_kept": {g["trace"].split("/")[3]: g["after"] for g in groups if g["before"] == 1536}}
                if "lowrank_in_budget" in result.report:
                    line["splits"] = {s["layer"]: s["rank"] for s in result.report["lowrank_in_budget"]["splits"]}
                    line["macs_reported"] = result.report["lowrank_in_budget"]["macs_after"]
                    if repaired:  # the allocation's steps: tool, group or layer, kept or rank, MACs fraction, calibration loss
                        line["steps"] = [[t["tool"], t.get("group", t.get("layer")), t.get("kept", t.get("rank")), t["macs_fraction"],
                                          t["loss"]] for t in result.report["allocation_trace"]]
                if repaired and args.latency:
                    a, b, _, _ = paired_latency(session(model, threads=1), session(pruned, threads=1), one, budget_s=6)
                    line["latency_ratio_b1"] = round(b / a, 3)
                print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
