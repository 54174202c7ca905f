"""--fp16 on real models: size, nodes, output error on seeded random inputs (max |diff| / max |fp32 output|),
ops kept in float32, seconds; optionally the same for onnxconverter-common's converter run in another
virtual environment (it is not a dependency).

    python benchmarks/bench_fp16.py [--occ-venv PATH] MODEL...
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort

from onnxslim.graph import load_model
from onnxslim.passes import cleanup
from onnxslim.passes.rewrite.fp16 import to_fp16

OCC = ("import onnx,sys; from onnxconverter_common import float16; "
       "onnx.save(float16.convert_float_to_float16(onnx.load(sys.argv[1]), keep_io_types=True), sys.argv[2])")


def _error(ref: onnx.ModelProto, other: onnx.ModelProto) -> float | str:
    rng = np.random.default_rng(0)
    try:
        a, b = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]) for m in (ref, other))
    except Exception as err:  # an invalid conversion
        return f"does not load: {str(err).splitlines()[0][:120]}"
    feeds = {}
    for i in a.get_inputs():
        dims = [d if isinstance(d, int) else 4 for d in i.shape]  # symbolic dims: 4 (batch and sequence)
        feeds[i.name] = rng.integers(0, 2, dims).astype(np.int64) if "int" in i.type else rng.random(dims).astype(np.float32)
    return max(float(np.abs(x - y).max() / np.abs(x).max()) for x, y in zip(a.run(None, feeds), b.run(None, feeds)))


def bench(path: str, occ_venv: str | None) -> dict:
    clean = cleanup.run(load_model(path)).model
    start = time.perf_counter()
    half, report = to_fp16(clean)
    row = {"model": os.path.basename(path), "nodes": len(clean.graph.node), "ours_nodes": len(half.graph.node),
           "mb": round(clean.ByteSize() / 1e6, 2), "ours_mb": round(half.ByteSize() / 1e6, 2),
           "ours_s": round(time.perf_counter() - start, 2), "ours_err": _error(clean, half), "kept_fp32": report["kept_fp32"]}
    if occ_venv:
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = os.path.join(tmp, "in.onnx"), os.path.join(tmp, "out.onnx")
            onnx.save(clean, src)
            start = time.perf_counter()
            subprocess.run([os.path.join(occ_venv, "bin", "python"), "-c", OCC, src, dst], check=True, capture_output=True)
            row["occ_s_with_startup"] = round(time.perf_counter() - start, 2)
            occ = onnx.load(dst)
            row["occ_nodes"], row["occ_err"] = len(occ.graph.node), _error(clean, occ)
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--occ-venv", help="virtual environment with onnxconverter-common installed")
    ap.add_argument("models", nargs="+")
    args = ap.parse_args()
    ort.set_default_logger_severity(3)
    for m in args.models:
        print(json.dumps(bench(m, args.occ_venv)), flush=True)


if __name__ == "__main__":
    main()
