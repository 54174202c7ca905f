"""A worker for bench_node_cases.py run in PyPI OnnxSlim's own virtual environment (the package names clash
with ours; never imported by onnxslim): reads "IN OUT" lines, runs OnnxSlim's default optimization
(`onnxslim.slim(IN, OUT)`), answers one line "ok SECONDS" or "error MESSAGE" per request."""
import contextlib
import sys
import time

import onnxslim  # PyPI OnnxSlim in that environment, not ours

answers = sys.stdout  # OnnxSlim prints its own summary table: that goes to stderr
for line in sys.stdin:
    src, dst = line.rstrip("\n").split("\t")
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):
            onnxslim.slim(src, dst)
        print(f"ok {time.perf_counter() - start:.4f}", file=answers, flush=True)
    except Exception as err:  # noqa: BLE001 - every failure is an answer
        text = " ".join(str(err).split())[:200]
        print(f"error {type(err).__name__}: {text}", file=answers, flush=True)
