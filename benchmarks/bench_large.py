"""Peak memory and time of the CLI on large decoder-only transformers (models/build_decoder.py), at several
sizes to show how the cost grows: load + bare cleanup (with and without validation), `--prune 0.3`,
`--quantize int8-dynamic`, `--quantize int4`.

Each run is a child process; its peak RSS is the kernel's ru_maxrss for that child alone (os.wait4). Models
and outputs go to --workdir (outside the repository; big models are written once and reused). One JSON
line per run: size preset, model bytes (graph + external data), command, exit code, wall seconds, peak
RSS in GiB and as a multiple of the model's size, output bytes.

    python benchmarks/bench_large.py --sizes 0.5gb,1gb --workdir /tmp/onnxslim-large
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {
    "bare-no-validate": ["--no-validate"],
    "bare-default": [],  # the bare command as a user types it: validation with latency timing
    "bare": ["--no-latency"],
    "prune-0.3": ["--prune", "0.3", "--no-latency"],
    "prune-0.3-default": ["--prune", "0.3"],  # with latency timing
    "int8-dynamic": ["--quantize", "int8-dynamic", "--no-latency"],
    "int4": ["--quantize", "int4", "--no-latency"],
}


def run_child(argv: list[str], timeout: float) -> dict:
    """Run argv; wall and CPU time, exit status and the child's own peak RSS (KiB on Linux)."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = start + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().strip().splitlines()
    # CPU seconds (user + sys) too: wall time on the shared machine says more about the other jobs
    return {"exit": proc.returncode, "seconds": round(time.perf_counter() - start, 1),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_gib": round(usage.ru_maxrss / 2**20, 3), "stderr_last": err[-1] if err else ""}


def files_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())


def ensure_model(preset: str, workdir: Path, timeout: float) -> tuple[Path, dict | None]:
    path = workdir / f"decoder_{preset}.onnx"
    if path.exists():
        return path, None
    build = run_child([sys.executable, str(ROOT / "models" / "build_decoder.py"), str(path), "--preset", preset,
                       "--external-data"], timeout)
    return path, build


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="0.5gb,1gb", help="presets of models/build_decoder.py")
    ap.add_argument("--commands", default=",".join(COMMANDS))
    ap.add_argument("--workdir", default="/tmp/onnxslim-large")
    ap.add_argument("--seq", type=int, default=64, help="sequence length of the validation / calibration inputs")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--label", default="", help="added to every line (e.g. which code ran: main or a branch)")
    args = ap.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for preset in args.sizes.split(","):
        model, build = ensure_model(preset, workdir, args.timeout)
        size = files_bytes(model)
        print(json.dumps({"size": preset, "model_bytes": size, "build": build}), flush=True)
        for name in args.commands.split(","):
            out = workdir / f"out_{preset}_{name}.onnx"
            argv = [sys.executable, "-m", "onnxslim.cli", str(model), str(out), *COMMANDS[name],
                    "--input-shape", f"input_ids:1,{args.seq}", "-q", "--report", str(out) + ".json"]
            result = run_child(argv, args.timeout)
            out_bytes = files_bytes(out) - (Path(str(out) + ".json").stat().st_size if Path(str(out) + ".json").exists() else 0)
            report = {}
            if Path(str(out) + ".json").exists():
                report = json.loads(Path(str(out) + ".json").read_text())
            passes = {k: v.get("seconds") for k, v in report.get("passes", {}).items()}
            latency = (report.get("validation") or {}).get("latency_ms")
            print(json.dumps({"size": preset, "model_bytes": size, "command": name, "label": args.label, **result,
                              "rss_over_model": round(result["peak_rss_gib"] * 2**30 / size, 2),
                              "output_bytes": out_bytes, "pass_seconds": passes,
                              **({"latency": latency} if latency else {})}), flush=True)
            for p in workdir.glob(out.name + "*"):
                p.unlink()


if __name__ == "__main__":
    main()
