"""Runs one fuzz case through the CLI in a subprocess and judges the outer contract (issue 15).

Layout of a run (a fresh temporary root each time):

    root/canary_parent.bin     outside the model's folder (its parent)
    root/model/in.onnx ...     the model's folder: the case's files and symlinks
    root/cwd/canary_cwd.bin    the process's working directory, also outside the model's folder
    root/out/out.onnx          where the output goes (must not exist after a failure)

The child (a process forked from a server that imported the CLI once, tests/cli_fork.py, in its own session)
runs under RLIMIT_AS (address space, default 2 GB) and a wall-clock limit. Reads outside the model's folder
are seen with inotify watches on the canaries (IN_OPEN, Linux): any open of a canary, through any path or
symlink, by any process, is a violation; every external-data mutation points at a canary when it points out
of the folder, so a read of a wrong location cannot go unseen. (Until session 6 this was strace on a fresh
subprocess: the same opens seen, at 2-3x the CPU per run.) Without inotify the canaries are made unreadable
(mode 000) and the check falls back to: the run never succeeds with a canary's bytes in its output -- weaker
(a read error may be swallowed, and root reads a mode-000 file).

Verdicts that fail a run: exit code not in {0, 1, 2} (3 is an internal error, negative a signal), a
traceback anywhere in the output, an allocation failure (MemoryError, bad_alloc, "Unable to allocate": the
run went over the memory bound), a timeout, an output written by a failed run, a changed input file,
an open of a canary."""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import signal
import struct
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from cli_fork import run_cli

from .mutations import COMMANDS, CWD_CANARY, PARENT_CANARY, Case

_IN_OPEN = 0x20
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
    return model_dir


def _absolute_locations(path: Path, target: str) -> None:
    from onnxslim.external import all_tensors
    model = onnx.load(str(path), load_external_data=False)
    for t in all_tensors(model):
        for e in t.external_data:
            if e.key == "location" and e.value == "@absolute":
                e.value = target
    path.write_bytes(model.SerializeToString())


class CanaryWatch:
    """inotify IN_OPEN watches on the canary files (Linux; `ok` is False elsewhere)."""

    def __init__(self, paths):
        self.fd = -1
        try:
            self.libc = ctypes.CDLL(None, use_errno=True)
            self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, AttributeError):
            return
        if self.fd >= 0 and any(self.libc.inotify_add_watch(self.fd, os.fsencode(p), _IN_OPEN) < 0 for p in paths):
            self.close()

    @property
    def ok(self) -> bool:
        return self.fd >= 0

    def opened(self) -> bool:
        """Whether a canary was opened since the watch began."""
        seen = False
        while True:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return seen
            for offset in _event_offsets(data):
                seen |= bool(struct.unpack_from("iIII", data, offset)[1] & _IN_OPEN)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def read_check() -> str:
    """How reads outside the model's folder are seen on this machine."""
    watch = CanaryWatch([__file__])
    ok = watch.ok
    watch.close()
    return "inotify on the canaries" if ok else "unreadable canaries"


def _event_offsets(data: bytes):
    offset = 0
    while offset + 16 <= len(data):  # struct inotify_event: wd, mask, cookie, len, name[len]
        yield offset
        offset += 16 + struct.unpack_from("iIII", data, offset)[3]


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
    before = _digest(model_dir)  # reads through the case's symlinks: before the canary watch begins
    out = root / "out" / "out.onnx"
    args = command_line(case, model_dir / "in.onnx", out)[3:]  # after `python -m onnxslim.cli`
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    env.pop("ONNXSLIM_DEBUG", None)
    watch = CanaryWatch([root / PARENT_CANARY, root / "cwd" / CWD_CANARY])
    watched = watch.ok
    if not watched:
        for canary in (root / PARENT_CANARY, root / "cwd" / CWD_CANARY):
            canary.chmod(0)
    started = time.perf_counter()
    try:
        proc = run_cli(args, cwd=root / "cwd", env=env, timeout=timeout, mem_bytes=mem_bytes, setsid=True, nice=nice)
        opened = watch.opened() if watched else None
    finally:
        watch.close()
    (root / "stdout").write_text(proc.stdout)
    (root / "stderr").write_text(proc.stderr)
    outcome = Outcome(case.describe(), proc.returncode, round(time.perf_counter() - started, 2), proc.maxrss / 2**20)
    _judge(outcome, proc.stdout + proc.stderr, root, model_dir, before, out, opened)
    return outcome


def _judge(o: Outcome, text: str, root: Path, model_dir: Path, before: dict, out: Path, opened: bool | None) -> None:
    """`opened`: whether the canary watch saw an open (None: no watch, the canaries were unreadable)."""
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
    if opened:
        o.problems.append("read outside the folder")
    elif opened is None and out.exists() and CANARY in out.read_bytes():
        o.problems.append("read outside the folder")
