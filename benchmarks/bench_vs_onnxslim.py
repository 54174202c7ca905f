"""Node count and tool time of our bare command (`onnxslim MODEL OUT --no-validate -q`) against the PyPI
OnnxSlim's (`onnxslim MODEL OUT`), which must live in its own virtual environment (the names clash).

    python benchmarks/bench_vs_onnxslim.py --other-venv PATH_TO_VENV models/*.onnx models/families/*.onnx

Prints one JSON line per model: nodes before, after ours, after theirs, seconds for each (wall clock of the
whole command, interpreter start included, as a user sees it: the median of `--repeat` runs, the two tools
alternating so that both see the same load; `*_s_all` lists every run), the rules our run applied, and whether each
output model still computes the original's outputs (benchmarks/output_check.py: random inputs at two sizes
of the dynamic dims; `ours_ok` / `onnxslim_ok`, `--no-check` skips it)."""
from __future__ import annotations

import argparse
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import onnx


def _nodes(path: str) -> int:
    return len(onnx.load(path, load_external_data=False).graph.node)


def _timed(cmd: list[str]) -> tuple[float, int, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return time.perf_counter() - start, proc.returncode, (proc.stderr.strip().splitlines() or [""])[-1]


def _cleanup_nodes(model: str) -> tuple[int, float]:
    """Our lossless path in-process (no CLI input checks): nodes after, seconds."""
    from onnxslim.graph import load_model
    from onnxslim.passes import cleanup
    start = time.perf_counter()
    out = cleanup.run(load_model(model)).model
    return len(out.graph.node), round(time.perf_counter() - start, 2)


def bench(model: str, other_venv: str, tmp: str, check: bool = True, repeat: int = 3) -> dict:
    name = os.path.splitext(os.path.basename(model))[0]
    ours, theirs, report = (os.path.join(tmp, f"{name}.{k}") for k in ("ours.onnx", "theirs.onnx", "report.json"))
    ours_cmd = [sys.executable, "-m", "onnxslim.cli", model, ours, "--no-validate", "-q", "--report", report]
    theirs_cmd = [os.path.join(other_venv, "bin", "onnxslim"), model, theirs]
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    for i in range(repeat):  # ours first on even runs, theirs first on odd ones
        for who in (("ours", "theirs") if i % 2 == 0 else ("theirs", "ours")):
            seconds, rc, err = _timed(ours_cmd if who == "ours" else theirs_cmd)
            times[who].append(round(seconds, 2))
            if who == "ours":
                rc_ours, err_ours = rc, err
            else:
                rc_theirs = rc
    row = {"model": name, "nodes_before": _nodes(model),
           "ours_nodes": _nodes(ours) if rc_ours == 0 else None, "onnxslim_nodes": _nodes(theirs) if rc_theirs == 0 else None,
           "ours_s": round(statistics.median(times["ours"]), 2), "onnxslim_s": round(statistics.median(times["theirs"]), 2),
           "ours_s_all": times["ours"], "onnxslim_s_all": times["theirs"]}
    if rc_ours == 0:
        with open(report) as f:
            row["rules"] = json.load(f)["passes"]["cleanup"].get("rules", {})
    else:  # e.g. a dynamic dim the CLI asks a size for (issue 10 item 1): the pass itself still runs
        row["ours_error"] = err_ours
        row["ours_cleanup_nodes"], row["ours_cleanup_s"] = _cleanup_nodes(model)
    if check:
        from output_check import check as outputs_agree
        done = {k: p for k, p, rc in (("ours", ours, rc_ours), ("onnxslim", theirs, rc_theirs)) if rc == 0}
        row.update(outputs_agree(model, done))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--other-venv", required=True, help="virtual environment with the PyPI onnxslim installed")
    ap.add_argument("--no-check", action="store_true", help="skip running the outputs against the original's")
    ap.add_argument("models", nargs="+")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each tool per model (median reported)")
    args = ap.parse_args()
    # pip compiles an installed package's bytecode (the PyPI tool's is); an editable install on a machine with
    # PYTHONDONTWRITEBYTECODE would compile ours on every run instead, which no installed user pays
    import onnxslim.passes
    compileall.compile_dir(os.path.dirname(onnxslim.__file__), quiet=1)
    compileall.compile_dir(os.path.dirname(onnxslim.passes.__file__), quiet=1)
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            print(json.dumps(bench(model, args.other_venv, tmp, not args.no_check, args.repeat)), flush=True)


if __name__ == "__main__":
    main()
