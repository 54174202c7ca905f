"""Calibration-driven pruning of a transformer: MiniLM-L6's FFN hidden features (the prunable groups; the
attention heads and the residual stream are frozen by LayerNorm and Q.K^T), with and without the repair and
its residual targets. Calibration: the first --calib sentences of ../shared/data/sentences; evaluation: the
rest. One JSON line per run: MACs fraction, mean and min cosine of sentence_embedding to the original's,
nearest-neighbour agreement (each sentence's most similar other sentence is the same one), latency ratio
(batch 1, 64 tokens, 1 onnxruntime thread), wall time of calibrate + prune + repair.

    python benchmarks/bench_prune_minilm.py --targets 0.9,0.8,0.7
    python benchmarks/bench_prune_minilm.py --budget latency --targets 0.8
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

from onnxslim.calibration import ArrayDataset  # noqa: E402
from onnxslim.context import Context  # noqa: E402
from onnxslim.cost import model_cost  # noqa: E402
from onnxslim.passes import cleanup  # noqa: E402
from onnxslim.passes.prune import PruneConfig, run  # noqa: E402
from onnxslim.progress import silent  # noqa: E402
from onnxslim.runtime import paired_latency, session  # noqa: E402


def embeddings(model, arrays: dict, batch: int = 50) -> np.ndarray:
    sess = session(model)
    n = len(next(iter(arrays.values())))
    return np.concatenate([sess.run(["sentence_embedding"], {k: v[i:i + batch] for k, v in arrays.items()})[0]
                           for i in range(0, n, batch)]).astype(np.float64)


def nearest(e: np.ndarray) -> np.ndarray:
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    return sim.argmax(axis=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "../shared/models/minilm_l6.onnx"))
    ap.add_argument("--tokens", default=str(ROOT / "../shared/data/sentences/minilm_tokens.npz"))
    ap.add_argument("--calib", type=int, default=64)
    ap.add_argument("--targets", default="0.9,0.8,0.7")
    ap.add_argument("--budget", choices=("macs", "latency"), default="macs")
    ap.add_argument("--combos", default="reconstruction:sensitivity,l2:global", help="importance:allocation,...")
    ap.add_argument("--variants", default="residual,plain", help="repair variants: residual (default), plain (no residual targets)")
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
    for combo in args.combos.split(","):
        importance, allocation = combo.split(":")
        for target in (float(t) for t in args.targets.split(",")):
            for variant in args.variants.split(","):
                config = PruneConfig(**{f"target_{args.budget}": target}, importance=importance, allocation=allocation,
                                     repair=True, residual_targets=variant == "residual")
                head = {"importance": importance, "allocation": allocation, f"target_{args.budget}": target, "variant": variant}
                start = time.perf_counter()
                try:
                    result = run(model, config, Context(calibration=calib, progress=silent, input_shapes=shapes))
                except Exception as err:  # one failing run must not hide the others
                    print(json.dumps({**head, "error": f"{type(err).__name__}: {err}"}), flush=True)
                    continue
                seconds = time.perf_counter() - start
                for repaired, pruned in ((True, result.model), (False, result.extras["unrepaired"])):
                    emb = embeddings(pruned, evaluation)
                    cos = np.sum(emb * base, 1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(base, axis=1)
                    line = {**head, "repair": repaired, "macs_fraction": round(model_cost(pruned, shapes)["macs"] / base_macs, 4),
                            "mean_cosine": round(float(cos.mean()), 4), "min_cosine": round(float(cos.min()), 4),
                            "nn_agreement": round(float((nearest(emb) == base_nn).mean()), 4),
                            "seconds": round(seconds, 1) if repaired else None,
                            "kept": [g["after"] for g in result.report["pruned_groups"]]}
                    if repaired:
                        a, b, _, spread = paired_latency(session(model, threads=1), session(pruned, threads=1), one, budget_s=6)
                        line["latency_ratio_b1"] = round(b / a, 3)
                        line["latency_iqr"] = [round(q, 3) for q in spread]
                        if "latency_model" in result.report:
                            line["estimated_latency_fraction"] = result.report["latency_model"]["estimated_fraction"]
                    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
