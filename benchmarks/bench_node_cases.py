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
    """An optimizer that hands each model to a worker running benchmarks/ext_onnxslim.py under `python`
    (PyPI OnnxSlim in its own environment); one worker for many cases, so interpreter start-up is paid
    rarely. After a failure the case is retried once in a fresh worker: state left in a long-lived OnnxSlim
    process made every later case fail with RecursionError."""
    script = str(Path(__file__).with_name("ext_onnxslim.py"))
    tmp = tempfile.mkdtemp(prefix="ext-onnxslim-")
    state = {}

    def start():
        state["worker"] = subprocess.Popen([python, script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                           stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": ""}, cwd=tmp)

    def ask(src, dst) -> str:
        worker = state["worker"]
        worker.stdin.write(f"{src}\t{dst}\n")
        worker.stdin.flush()
        return worker.stdout.readline().strip()

    def optimize(model):
        import onnx
        from onnxslim.errors import SlimError
        src, dst = os.path.join(tmp, "in.onnx"), os.path.join(tmp, "out.onnx")
        if os.path.exists(dst):
            os.unlink(dst)
        onnx.save(model, src)
        answer = ask(src, dst)
        if not answer.startswith("ok"):
            state["worker"].kill()
            start()
            answer = ask(src, dst)
        if not answer.startswith("ok") or not os.path.exists(dst):
            raise SlimError(answer[6:] or "the worker stopped")
        optimize.tool_seconds += float(answer.split()[1])
        return onnx.load(dst)
    start()
    optimize.tool_seconds = 0.0
    return optimize


def _timed(optimizer):
    """`optimizer` with its own time summed in .tool_seconds (ours: cleanup and validation)."""
    def run(model):
        start = time.perf_counter()
        try:
            return optimizer(model)
        finally:
            run.tool_seconds += time.perf_counter() - start
    run.tool_seconds = 0.0
    run.__wrapped__ = optimizer
    return run


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
    optimizer = _timed(node_cases.ours) if args.tool[0] == "ours" else external(args.tool[1])
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
    extra = {"tool_seconds": round(optimizer.tool_seconds, 1)} if hasattr(optimizer, "tool_seconds") else {}
    print(json.dumps({"tool": args.tool[0], "cases": len(cases), **{s: counts[s] for s in node_cases.STATUSES},
                      "seconds": round(time.perf_counter() - start, 1), **extra}))


if __name__ == "__main__":
    main()
