"""Fuzz the CLI for a given time (issue 15) and print JSON counts.

    nice -n 15 python benchmarks/fuzz_hour.py --minutes 60 --seed 0 [--workers 2] [--failures FILE]

The same mutations and verdicts as the CI fuzz test (tests/fuzz/), drawn with random.Random(seed) instead
of hypothesis. Counts: runs, exit codes, commands, mutation kinds, and every verdict of the harness
(internal errors, tracebacks, runs over memory, timeouts, outputs on failure, modified inputs, reads
outside the model's folder), the peak RSS of the largest run, stray stderr lines (not `onnxslim: ...`).
The failing cases are written to --failures as JSON lines."""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fuzz.harness import read_check, run_case  # noqa: E402
from fuzz.mutations import RandomChooser, draw_case  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--mem-gb", type=float, default=2.0, help="address-space limit of every run")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per run")
    ap.add_argument("--failures", type=Path, default=None, help="JSON lines of the failing cases")
    ap.add_argument("--log", type=Path, default=None, help="JSON lines of every run")
    args = ap.parse_args()
    chooser = RandomChooser(random.Random(args.seed))
    deadline = time.monotonic() + 60 * args.minutes
    counts = {"exit": Counter(), "command": Counter(), "mutation": Counter(), "problems": Counter()}
    totals = {"runs": 0, "failing_runs": 0, "stray_stderr_runs": 0, "peak_rss_mb": 0.0, "seconds": 0.0}
    failures = []
    started = time.monotonic()
    with ThreadPoolExecutor(args.workers) as pool:
        running = {}
        while running or time.monotonic() < deadline:
            while time.monotonic() < deadline and len(running) < args.workers:
                case = draw_case(chooser)
                running[pool.submit(run_case, case, mem_bytes=int(args.mem_gb * 2**30), timeout=args.timeout)] = case
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                case, outcome = running.pop(future), future.result()
                totals["runs"] += 1
                counts["exit"][str(outcome.rc)] += 1
                counts["command"][case.command] += 1
                counts["mutation"][case.label.split()[0]] += 1
                counts["problems"].update(outcome.problems)
                totals["peak_rss_mb"] = max(totals["peak_rss_mb"], round(outcome.peak_mb, 1))
                totals["stray_stderr_runs"] += bool(outcome.stray_lines)
                if args.log:
                    with open(args.log, "a") as fh:
                        fh.write(json.dumps({"case": outcome.case, "exit": outcome.rc, "problems": outcome.problems,
                                             "peak_mb": round(outcome.peak_mb), "stray": outcome.stray_lines,
                                             "last_line": outcome.last_line}) + "\n")
                if outcome.problems:
                    totals["failing_runs"] += 1
                    failures.append({"case": outcome.case, "problems": outcome.problems, "exit": outcome.rc,
                                     "last_line": outcome.last_line})
    totals["seconds"] = round(time.monotonic() - started, 1)
    report = {**totals, "seed": args.seed, "workers": args.workers, "mem_limit_gb": args.mem_gb,
              "read_check": read_check(), **{k: dict(v) for k, v in counts.items()}}
    if args.failures:
        args.failures.write_text("".join(json.dumps(f) + "\n" for f in failures))
    print(json.dumps(report, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
