"""A progress bar on stderr that stays silent for work that finishes within a couple of seconds."""
from __future__ import annotations

import sys
import time


class Progress:
    """`with progress("calibrating", total=64) as bar: bar.update(8)`; draws only after `delay` seconds."""

    def __init__(self, label: str, total: int | None = None, *, delay: float = 2.0, stream=None, enabled: bool = True):
        self.label, self.total, self.delay = label, total, delay
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.done = 0
        self._start = time.perf_counter()
        self._drawn = False
        self._last = 0.0

    def __enter__(self):
        return self

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if not self.enabled or now - self._start < self.delay or now - self._last < 0.2:
            return
        self._last = now
        self._drawn = True
        elapsed = now - self._start
        if self.total:
            frac = min(1.0, self.done / self.total)
            bar = "#" * int(frac * 30)
            self.stream.write(f"\r{self.label:<24} [{bar:<30}] {self.done}/{self.total} {elapsed:5.1f}s {eta(elapsed, self.done, self.total)}  ")
        else:
            self.stream.write(f"\r{self.label:<24} {self.done} {elapsed:5.1f}s")
        self.stream.flush()

    def __exit__(self, *exc):
        if self._drawn:
            self.stream.write(f"\r{self.label:<24} done in {time.perf_counter() - self._start:.1f}s" + " " * 30 + "\n")
            self.stream.flush()
        return False


def eta(elapsed: float, done: int, total: int) -> str:
    """'ETA 1m05s' from the average pace so far (steps of one bar take alike long); 'ETA ?' before the first."""
    if done <= 0:
        return "ETA ?"
    left = max(0.0, elapsed / done * (total - done))
    minutes, seconds = divmod(int(round(left)), 60)
    return f"ETA {minutes}m{seconds:02d}s" if minutes else f"ETA {seconds}s"


def progress(label: str, total: int | None = None, **kw) -> Progress:
    return Progress(label, total, **kw)


def silent(label: str, total: int | None = None, **kw) -> Progress:
    return Progress(label, total, enabled=False, **kw)
