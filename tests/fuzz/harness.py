"""Runs one fuzz case through the CLI in a subprocess and judges the outer contract (issue 15).

Layout of a run (a fresh temporary root each time):

    root/canary_parent.bin     outside the model's folder (its parent)
    root/model/in.onnx ...     the model's folder: the case's files and symlinks
    root/cwd/canary_cwd.bin    the process's working directory, also outside the model's folder
    root/out/out.onnx          where the output goes (must not exist after a failure)

The child runs under RLIMIT_AS (address space, default 2 GB) and a wall-clock limit. Reads outside the
model's folder are seen with strace (`-f -e trace=open,openat,openat2`): any open of a canary, by any
process of the run, is a violation; every external-data mutation points at a canary when it points out of
the folder, so a read of a wrong location cannot go unseen. Without strace the canaries are made unreadable
(mode 000) and the check falls back to: the run never succeeds with a canary's bytes in its output -- weaker
(a read error may be swallowed), which is why strace is used whenever it is installed.

Verdicts that fail a run: exit code not in {0, 1, 2} (3 is an internal error, negative a signal), a
traceback anywhere in the output, an allocation failure (MemoryError, bad_alloc, "Unable to allocate": the
run went over the memory bound), a timeout, an output written by a failed run, a changed input file,
an open of a canary."""
from __future__ import annotations

import hashlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from .mutations import COMMANDS, CWD_CANARY, PARENT_CANARY, Case

STRACE = shutil.which("strace")
# only the traced syscalls stop the process (strace >= 5.3 on Linux): about a third less CPU per traced run
SECCOMP = ["--seccomp-bpf"] if STRACE and subprocess.run(
    [STRACE, "--seccomp-bpf", "-f", "-qq", "-e", "trace=openat", "-o", os.devnull, "true"], capture_output=True).returncode == 0 else []
CANARY = b"CANARY-must-never-be-read" * 4
ALLOC_FAILURES = ("MemoryError", "bad_alloc", "Unable to allocate", "Failed to allocate", "BFCArena", "out of memory")


@dataclass
class Outcome:
    case: str
    rc: int
    seconds: float
    peak_mb: float
    problems: list = field(default_factory=list)
    stray_lines: int = 0  # stderr lines not in our `onnxslim: ...` form (e.g. onnxruntime's own log)
    last_line: str = ""


def command_line(case: Case, model: Path, out: Path) -> list:
    if COMMANDS[case.command] is None:
        return [sys.executable, "-m", "onnxslim.cli", "inspect", str(model)] + _inspect_options(case.options)
    return [sys.executable, "-m", "onnxslim.cli", str(model), str(out), "-q", "--no-latency"] + COMMANDS[case.command] + case.options


def _inspect_options(options: list) -> list:
    keep, i = [], 0
    while i < len(options):  # inspect takes only --input-shape
        if options[i] == "--input-shape" and i + 1 < len(options):
            keep += options[i:i + 2]
        i += 2
    return keep


def _materialize(case: Case, root: Path) -> Path:
    model_dir = root / "model"
    for sub in ("model", "cwd", "out"):
        (root / sub).mkdir()
    (root / PARENT_CANARY).write_bytes(CANARY)
    (root / "cwd" / CWD_CANARY).write_bytes(CANARY)
    for name, data in case.files.items():
        (model_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (model_dir / name).write_bytes(data)
    if b"@absolute" in case.files["in.onnx"]:
        _absolute_locations(model_dir / "in.onnx", str(root / PARENT_CANARY))
    for name, target in case.symlinks.items():
        target = target.replace("@parent/", str(root) + "/").replace("@cwd/", str(root / "cwd") + "/")
        (model_dir / name).symlink_to(target)
    if not STRACE:
        for canary in (root / PARENT_CANARY, root / "cwd" / CWD_CANARY):
            canary.chmod(0)
    return model_dir


def _absolute_locations(path: Path, target: str) -> None:
    from onnxslim.external import all_tensors
    model = onnx.load(str(path), load_external_data=False)
    for t in all_tensors(model):
        for e in t.external_data:
            if e.key == "location" and e.value == "@absolute":
                e.value = target
    path.write_bytes(model.SerializeToString())


_OPEN = re.compile(r'open(?:at2?)?\((?:AT_FDCWD, |\d+, )?"((?:[^"\\]|\\.)*)"')


def canary_opens(trace: str, root: Path) -> list:
    """Opens (by any process of the run) of a path that is, after symlinks, one of the canaries."""
    canaries = {os.path.realpath(root / PARENT_CANARY), os.path.realpath(root / "cwd" / CWD_CANARY)}
    found = []
    for line in trace.splitlines():
        match = _OPEN.search(line)
        if not match:
            continue
        path = match.group(1)
        full = path if path.startswith("/") else str(root / "cwd" / path)  # children run in root/cwd
        if os.path.realpath(full) in canaries:
            found.append(line)
    return found


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "link")
            for p in sorted(folder.rglob("*")) if p.is_file() or p.is_symlink()}


def run_case(case: Case, *, mem_bytes: int = 2 * 2**30, timeout: float = 60.0, nice: int = 0) -> Outcome:
    root = Path(tempfile.mkdtemp(prefix="onnxslim-fuzz-"))
    try:
        return _run_in(case, root, mem_bytes, timeout, nice)
    finally:
        for canary in (root / PARENT_CANARY, root / "cwd" / CWD_CANARY):
            if canary.exists():
                canary.chmod(0o600)
        shutil.rmtree(root, ignore_errors=True)


def _run_in(case: Case, root: Path, mem_bytes: int, timeout: float, nice: int) -> Outcome:
    import time
    model_dir = _materialize(case, root)
    before = _digest(model_dir)
    out = root / "out" / "out.onnx"
    argv = command_line(case, model_dir / "in.onnx", out)
    trace = root / "trace.txt"
    if STRACE:
        argv = [STRACE, *SECCOMP, "-f", "-qq", "-e", "trace=open,openat,openat2", "-o", str(trace)] + argv

    def limits():
        os.setsid()
        resource.setrlimit(resource.RLIMIT_AS, (mem_bytes, mem_bytes))
        if nice:
            os.nice(nice)

    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    env.pop("ONNXSLIM_DEBUG", None)
    started = time.perf_counter()
    with open(root / "stdout", "wb") as so, open(root / "stderr", "wb") as se:
        proc = subprocess.Popen(argv, cwd=root / "cwd", stdout=so, stderr=se, preexec_fn=limits, env=env)
        timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
        timer.start()
        _, status, usage = os.wait4(proc.pid, 0)
        timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    outcome = Outcome(case.describe(), proc.returncode, round(time.perf_counter() - started, 2), usage.ru_maxrss / 1024)
    text = (root / "stdout").read_text(errors="replace") + (root / "stderr").read_text(errors="replace")
    _judge(outcome, text, root, model_dir, before, out, trace)
    return outcome


def _judge(o: Outcome, text: str, root: Path, model_dir: Path, before: dict, out: Path, trace: Path) -> None:
    err_lines = [line for line in (root / "stderr").read_text(errors="replace").splitlines() if line.strip()]
    o.last_line = err_lines[-1][:300] if err_lines else ""
    o.stray_lines = sum(not line.startswith("onnxslim: ") for line in err_lines)
    if o.rc == -signal.SIGKILL:
        o.problems.append("timeout")
    elif o.rc not in (0, 1, 2):
        o.problems.append(f"exit {o.rc}")
    if "Traceback" in text:
        o.problems.append("traceback")
    if any(marker in text for marker in ALLOC_FAILURES):
        o.problems.append("over memory")
    if o.rc != 0 and out.exists():
        o.problems.append("output on failure")
    if _digest(model_dir) != before:
        o.problems.append("input modified")
    if STRACE and trace.exists():
        if canary_opens(trace.read_text(errors="replace"), root):
            o.problems.append("read outside the folder")
    elif out.exists() and CANARY in out.read_bytes():
        o.problems.append("read outside the folder")
