"""Run the bare optimizer (or another tool) on every ONNX backend node case and print JSON counts.

    python benchmarks/bench_node_cases.py [--only NAME ...] [--details FILE.jsonl] [--tool ours|onnxslim-pypi PYTHON]

`--tool onnxslim-pypi PYTHON` runs PyPI OnnxSlim in the interpreter PYTHON (its own virtual environment:
the package names clash with ours) through a subprocess per case (see benchmarks/ext_onnxslim.py).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import node_cases  # noqa: E402


def external(python: str):
    """An optimizer that runs `python benchmarks/ext_onnxslim.py IN OUT` (PyPI OnnxSlim)."""
    script = str(Path(__file__).with_name("ext_onnxslim.py"))

    def optimize(model):
        import onnx
        from onnxslim.errors import SlimError
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = os.path.join(tmp, "in.onnx"), os.path.join(tmp, "out.onnx")
            onnx.save(model, src)
            proc = subprocess.run([python, script, src, dst], capture_output=True, text=True, timeout=300,
                                  env={**os.environ, "PYTHONPATH": ""}, cwd=tmp)
            if proc.returncode != 0 or not os.path.exists(dst):
                raise SlimError((proc.stderr.strip().splitlines() or ["failed"])[-1][:200])
            return onnx.load(dst)
    return optimize


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", help="case names")
    ap.add_argument("--details", help="write one JSON line per case here")
    ap.add_argument("--tool", nargs="+", default=["ours"], help="ours | onnxslim-pypi PYTHON")
    ap.add_argument("--max-memory-gb", type=float, default=6.0,
                    help="address-space cap: a case that would allocate more fails instead of swapping the machine")
    args = ap.parse_args(argv)
    import resource
    cap = int(args.max_memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    optimizer = node_cases.ours if args.tool[0] == "ours" else external(args.tool[1])
    cases = node_cases.load_cases(args.only)
    counts: collections.Counter = collections.Counter()
    start = time.perf_counter()
    out = open(args.details, "w") if args.details else None
    for case in cases:
        outcome = node_cases.run_case(case, optimizer)
        counts[outcome.status] += 1
        if out:
            out.write(json.dumps(outcome.__dict__) + "\n")
            out.flush()
    print(json.dumps({"tool": args.tool[0], "cases": len(cases), **{s: counts[s] for s in node_cases.STATUSES},
                      "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
