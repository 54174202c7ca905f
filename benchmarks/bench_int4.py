"""Weight-only quantization of MiniLM-L6 (`--quantize int4 / int8-weight`): sentence-embedding cosine to the
original on the shared sentences, file size ratio, latency ratio at one onnxruntime thread.

The first --calib sentences feed the pass (its fidelity report and the --tolerance fallback); the other
sentences measure. One JSON line per configuration: mode, block size, symmetric, embeddings quantized or not,
tolerance; mean / min cosine of sentence_embedding, nearest-neighbour agreement, size ratio (serialized
bytes), latency ratio (batch 1, 64 tokens, 1 thread, alternating blocks), layers left in float, seconds.

    python benchmarks/bench_int4.py                                  # the default grid
    python benchmarks/bench_int4.py --grid "int4:32:asym:emb:0.2"     # mode:block:sym|asym:emb|noemb:tolerance|-[:accuracy_level]
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_prune_minilm import embeddings, nearest  # noqa: E402
from onnxslim.calibration import ArrayDataset  # noqa: E402
from onnxslim.context import Context  # noqa: E402
from onnxslim.graph import load_model, model_bytes  # noqa: E402
from onnxslim.passes import cleanup  # noqa: E402
from onnxslim.passes.quantize import QuantizeConfig, run  # noqa: E402
from onnxslim.progress import silent  # noqa: E402
from onnxslim.runtime import paired_latency, session  # noqa: E402

DEFAULT_GRID = ("int4:32:asym:emb:-,int4:32:sym:emb:-,int4:16:asym:emb:-,int4:64:asym:emb:-,int4:32:asym:noemb:-,"
                "int8-weight:32:asym:emb:-,int4:32:asym:emb:0.15")


def parse(item: str) -> dict:
    mode, block, sym, emb, tol, *acc = item.split(":")  # an optional 6th field: MatMulNBits accuracy_level
    return dict(mode=mode, block_size=int(block), symmetric=sym == "sym", embeddings=emb == "emb",
                tolerance=None if tol == "-" else float(tol), accuracy_level=int(acc[0]) if acc else None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / "../shared/models/minilm_l6.onnx"))
    ap.add_argument("--tokens", default=str(ROOT / "../shared/data/sentences/minilm_tokens.npz"))
    ap.add_argument("--calib", type=int, default=100)
    ap.add_argument("--grid", default=DEFAULT_GRID)
    ap.add_argument("--latency-budget", type=float, default=8.0, help="seconds of paired timing per configuration")
    ap.add_argument("--save", help="folder to write the quantized models to")
    args = ap.parse_args()
    model = cleanup.run(load_model(args.model)).model
    names = [i.name for i in model.graph.input]
    tokens = {k: v for k, v in np.load(args.tokens).items() if k in names}
    calib = ArrayDataset({k: v[:args.calib] for k, v in tokens.items()}, f"first {args.calib} sentences")
    evaluation = {k: v[args.calib:] for k, v in tokens.items()}
    base = embeddings(model, evaluation)
    base_nn = nearest(base)
    one = {k: v[:1] for k, v in evaluation.items()}
    print(json.dumps({"model": Path(args.model).name, "calib_sentences": args.calib, "eval_sentences": len(base),
                      "bytes": model_bytes(model)}), flush=True)
    for item in args.grid.split(","):
        kw = parse(item)
        start = time.perf_counter()
        result = run(model, QuantizeConfig(measure_latency=False, **kw), Context(calibration=calib, progress=silent))
        seconds = time.perf_counter() - start
        q = result.model
        got = embeddings(q, evaluation)
        cos = (base * got).sum(1) / np.linalg.norm(base, axis=1) / np.linalg.norm(got, axis=1)
        t_float, t_q, runs, spread = paired_latency(session(model, threads=1), session(q, threads=1), one,
                                                    budget_s=args.latency_budget)
        if args.save:
            from onnxslim.graph import save_model
            save_model(q, Path(args.save) / f"minilm_{item.replace(':', '_')}.onnx")
        report = result.report
        print(json.dumps({
            **{k: v for k, v in kw.items()}, "mean_cosine": round(float(cos.mean()), 5), "min_cosine": round(float(cos.min()), 5),
            "nn_agreement": round(float((nearest(got) == base_nn).mean()), 4),
            "size_ratio": round(model_bytes(q) / model_bytes(model), 4),
            "latency_ratio": round(t_q / t_float, 4), "latency_spread": [round(x, 4) for x in spread],
            "float_ms": round(t_float * 1e3, 3), "quantized_ms": round(t_q * 1e3, 3), "timed_runs": runs,
            "quantized": len(report["weight_only"]["quantized"]),
            "left_in_float": [f"{f['node']}: {f['reason']}" for f in report["left_in_float"]],
            "fallback": {k: report["fallback"].get(k) for k in ("error_before", "error_after", "kept_in_float", "tried")} if "fallback" in report else None,
            "seconds": round(seconds, 1)}), flush=True)


if __name__ == "__main__":
    main()
