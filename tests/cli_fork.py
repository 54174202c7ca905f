"""Run `onnxslim` commands as child processes forked from a server that imported the CLI once.

A fresh `python -m onnxslim.cli` spends 1.5-2 s of CPU importing onnx, onnxruntime and onnx-ir before it
reads its arguments, and the suite runs the CLI about 150 times. The server (one per test process, started on
first use) imports `onnxslim.cli` once, with its own stderr captured, and forks one child per command. A
child is a real process: its own working folder, environment, address-space limit, session, stdout and
stderr files and exit code (or signal); it writes what the imports printed on stderr first, then runs
`onnxslim.cli.main()` as `python -m onnxslim.cli` does after its imports, then the interpreter's exit
(atexit handlers, flushed streams).

What only a fresh interpreter shows stays on real subprocesses: the console script and `python -m`
(test_cli.py::test_console_script_when_installed, test_prune_choose, test_weight_only), the files every
import opens (test_hostile.py's strace test, the fuzzer under strace), signals during a write
(test_nothing_lost.py).
"""
from __future__ import annotations

import atexit
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import Future
from pathlib import Path

POLL = 0.02  # seconds between the server's checks for finished and overdue children


# -- the server (this file run as a script) ----------------------------------------------------------------

def _serve() -> None:
    import resource
    import select
    import signal
    import time

    if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]  # the tests' folder (this script's) is not on the CLI's import path
    requests, replies = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    with tempfile.TemporaryFile() as captured:  # what the imports print on stderr, replayed by each child
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        import onnxslim.cli as cli
        sys.stderr.flush()
        os.dup2(saved, 2)
        captured.seek(0)
        import_stderr = captured.read()

    def child(req: dict) -> None:
        code = 1
        try:
            os.close(requests)
            os.close(replies)
            if req["setsid"]:
                os.setsid()
            if req["nice"]:
                os.nice(req["nice"])
            if req["mem_bytes"]:
                resource.setrlimit(resource.RLIMIT_AS, (req["mem_bytes"], req["mem_bytes"]))
            os.chdir(req["cwd"])
            os.environ.clear()
            os.environ.update(req["env"])
            for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
                f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.dup2(f, fd)
                os.close(f)
            os.write(2, import_stderr)
            sys.argv = [cli.__file__, *req["args"]]
            code = _main(cli)
        except BaseException:  # noqa: BLE001 - setting the child up failed: say why on the server's stderr
            import traceback
            traceback.print_exc()
        finally:
            os._exit(code)

    running = {}  # pid -> [request id, deadline, own session, timed out]
    pending, open_ = b"", True
    while open_ or running:
        if open_ and select.select([requests], [], [], POLL)[0]:
            chunk = os.read(requests, 1 << 16)
            open_ = bool(chunk)
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                req = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    child(req)
                running[pid] = [req["id"], time.monotonic() + req["timeout"], req["setsid"], False]
        elif not open_:
            time.sleep(POLL)
        while running:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
            if pid == 0:
                break
            rid, _, _, timed_out = running.pop(pid)
            reply = {"id": rid, "rc": os.waitstatus_to_exitcode(status), "maxrss": usage.ru_maxrss * 1024,
                     "timed_out": timed_out}
            os.write(replies, (json.dumps(reply) + "\n").encode())
        now = time.monotonic()
        for pid, entry in running.items():
            if now > entry[1] and not entry[3]:
                entry[3] = True
                try:
                    os.killpg(pid, signal.SIGKILL) if entry[2] else os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _main(cli) -> int:
    """cli.main() and the interpreter's exit: the exit code, a traceback for an uncaught exception."""
    import atexit
    import signal
    import traceback

    try:
        cli.main()
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if done.code is not None and not isinstance(done.code, int):
            print(done.code, file=sys.stderr)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 128 + signal.SIGINT
    except BaseException:  # noqa: BLE001 - what the interpreter does with any uncaught exception
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):
            pass
    return code


# -- the client ------------------------------------------------------------------------------------------

class _Server:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     cwd=tempfile.gettempdir())
        self.lock, self.ids, self.waiting = threading.Lock(), itertools.count(), {}
        threading.Thread(target=self._replies, daemon=True).start()
        atexit.register(self.close)

    def close(self) -> None:
        """End the server once its children are done (so its CPU time is counted in this process's)."""
        self.proc.stdin.close()
        self.proc.wait()

    def _replies(self) -> None:
        for line in self.proc.stdout:
            reply = json.loads(line)
            with self.lock:
                future = self.waiting.pop(reply["id"])
            future.set_result(reply)
        with self.lock:  # the server died: every caller still waiting fails
            for future in self.waiting.values():
                future.set_exception(RuntimeError(f"the CLI fork server exited ({self.proc.wait()})"))
            self.waiting.clear()

    def run(self, req: dict) -> dict:
        future = Future()
        with self.lock:
            req["id"] = next(self.ids)
            self.waiting[req["id"]] = future
            self.proc.stdin.write((json.dumps(req) + "\n").encode())
            self.proc.stdin.flush()
        return future.result()


_server, _server_lock = None, threading.Lock()


def run_cli(args, *, cwd, env: dict | None = None, timeout: float = 120, mem_bytes: int | None = None,
            setsid: bool = False, nice: int = 0) -> subprocess.CompletedProcess:
    """`onnxslim ARGS` in `cwd` as a forked child; returns its exit code (negative: killed by that signal),
    stdout and stderr (text), with `.maxrss` (peak RSS, bytes) and `.timed_out` (killed after `timeout`)."""
    global _server
    with _server_lock:
        if _server is None or _server.proc.poll() is not None:
            _server = _Server()
    with tempfile.TemporaryDirectory(prefix="onnxslim-cli-") as tmp:
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        reply = _server.run({"args": [str(a) for a in args], "cwd": os.path.abspath(cwd),
                             "env": dict(os.environ if env is None else env), "timeout": timeout,
                             "mem_bytes": mem_bytes, "setsid": setsid, "nice": nice, "stdout": str(out), "stderr": str(err)})
        done = subprocess.CompletedProcess(args, reply["rc"], out.read_text(errors="replace"),
                                           err.read_text(errors="replace"))
    done.maxrss, done.timed_out = reply["maxrss"], reply["timed_out"]
    return done


if __name__ == "__main__":
    _serve()
