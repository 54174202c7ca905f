"""Peak RSS of the Python API given a path (the CLI's numbers are bench_large.py's): a child process runs
`optimize(path, prune=PruneConfig(ratio=0.3), latency=False)` with validation, then `graph.save_model` of the
result; one JSON line per code version (`--code DIR`, repeatable; default this checkout), with the child's
own ru_maxrss and the worst output cosine of the validation.

    python benchmarks/bench_api_memory.py /tmp/onnxslim-large/decoder_0.5gb.onnx --code /tmp/base --code .
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_large import files_bytes, run_child  # noqa: E402

CHILD = """
import sys
from onnxslim import graph, pipeline
from onnxslim.passes.prune.config import PruneConfig
from onnxslim.progress import silent
r = pipeline.optimize(sys.argv[1], prune=PruneConfig(ratio=0.3), latency=False, progress=silent,
                      input_shapes={"input_ids": [1, int(sys.argv[3])]})
graph.save_model(r.model, sys.argv[2])
print(min(o["cosine"] for o in r.report["validation"]["outputs"].values()), file=sys.stderr)
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--code", action="append", help="folder with the code to run (PYTHONPATH)")
    ap.add_argument("--seq", type=int, default=64)
    args = ap.parse_args()
    model = Path(args.model)
    size = files_bytes(model)
    for code in args.code or [str(Path(__file__).resolve().parent.parent)]:
        with tempfile.TemporaryDirectory(prefix="api-memory-") as tmp:
            os.environ["PYTHONPATH"] = code
            result = run_child([sys.executable, "-c", CHILD, str(model), os.path.join(tmp, "out.onnx"), str(args.seq)], 3600)
        print(json.dumps({"code": code, "model": model.name, "model_bytes": size, **result,
                          "rss_over_model": round(result["peak_rss_gib"] * 2**30 / size, 2)}), flush=True)


if __name__ == "__main__":
    main()
