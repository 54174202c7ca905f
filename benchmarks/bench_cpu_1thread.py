"""Issue 11 (run time): one onnxslim command with every onnxruntime session at 1 intra-op thread, and its
CPU seconds (user + sys of this process) on stderr as one JSON line.

    python benchmarks/bench_cpu_1thread.py [--code CHECKOUT_CODE] -- MODEL OUT [onnxslim options]

Why 1 thread: on the shared 2-core machine, sessions with 2 intra-op threads spin while they wait for
the loaded cores, and that spinning is counted as CPU time (the same plan evaluations measured 5.5 CPU s
whole-model and 6.1 s sliced at 2 threads, 3.4 s and 1.8 s at 1 thread). At 1 thread the CPU seconds are
the work done, and a before/after ratio from them is what a quiet machine would see.
--code: a directory with another checkout's onnxslim/ (passes/ linked inside), put first on sys.path.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--code"]:
        sys.path.insert(0, args[1])
        args = args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    import onnxslim.runtime as runtime

    original = runtime.session

    def one_thread(model, **kw):
        kw["threads"] = kw.get("threads") or 1
        return original(model, **kw)

    runtime.session = one_thread  # before the passes import it by name
    from onnxslim import cli
    for module in list(sys.modules.values()):  # any module that bound it already
        if getattr(module, "session", None) is original:
            module.session = one_thread
    start = time.perf_counter()
    code = 0
    try:
        sys.argv = ["onnxslim", *args]
        cli.main()
    except SystemExit as err:
        code = err.code or 0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1), "user": round(usage.ru_utime, 1),
                      "sys": round(usage.ru_stime, 1), "wall_seconds": round(time.perf_counter() - start, 1),
                      "max_rss_mb": round(usage.ru_maxrss / 1024, 1), "exit": code,
                      "code": os.path.dirname(sys.modules["onnxslim"].__file__)}), file=sys.stderr)


if __name__ == "__main__":
    main()
