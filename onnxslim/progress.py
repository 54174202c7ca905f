"""A progress bar on stderr that stays silent for work that finishes within a couple of seconds.

Bars opened inside another (calibration passes inside the sensitivity allocation) share its line: the outer
bar's count and ETA stay in view, the inner one follows it, and only the outermost bar prints 'done'."""
from __future__ import annotations

import shutil
import sys
import time

_OPEN: list["Progress"] = []  # enabled bars currently open, outermost first


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
        self._width = 0  # characters of the last line drawn, to blank it out

    def __enter__(self):
        if self.enabled:
            _OPEN.append(self)
        return self

    def status(self, now: float, short: bool = False) -> str:
        elapsed = now - self._start
        if self.total and short:  # an outer bar: count and ETA only, so the shared line fits a terminal
            return f"{self.label} {self.done}/{self.total} {eta(elapsed, self.done, self.total)}"
        if self.total:
            frac = min(1.0, self.done / self.total)
            return f"{self.label} [{'#' * int(frac * 20):<20}] {self.done}/{self.total} {elapsed:.0f}s {eta(elapsed, self.done, self.total)}"
        return f"{self.label} {self.done} {elapsed:.0f}s"

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if not self.enabled or now - self._start < self.delay or now - self._last < 0.2:
            return
        self._last = now
        self._drawn = True
        outer = [bar for bar in _OPEN if bar is not self and bar.stream is self.stream]
        line = " > ".join([bar.status(now, short=True) for bar in outer] + [self.status(now)])
        self._draw(line, outer[0] if outer else self)

    def _draw(self, line: str, owner: "Progress") -> None:
        # pad to the longest line drawn so far on this line, so a shorter one leaves no leftovers
        line = line[:shutil.get_terminal_size((100, 24)).columns - 1]  # a wrapped line cannot be redrawn with \r
        owner._width = max(owner._width, len(line))
        owner._drawn = True
        self.stream.write("\r" + line.ljust(owner._width))
        self.stream.flush()

    def __exit__(self, *exc):
        if self in _OPEN:
            _OPEN.remove(self)
        nested = any(bar.stream is self.stream for bar in _OPEN)
        if self._drawn and not nested:
            text = f"{self.label:<24} done in {time.perf_counter() - self._start:.1f}s"
            self.stream.write("\r" + text.ljust(max(self._width, len(text))) + "\n")
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
