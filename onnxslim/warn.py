"""Warnings as one line each (issue 15: numpy's RuntimeWarning lines with a source excerpt leaked into the
output for BatchNorm with zero variance, Inf weights, NaN calibration data).

Our own SlimWarnings print as `onnxslim: warning: ...`. A numpy RuntimeWarning (overflow, invalid value)
prints once per message as `onnxslim: warning: numerical: ...` -- the model check has usually said why
already (non-finite weights, a variance <= 0) -- never with the source line numpy attaches."""
from __future__ import annotations

import contextlib
import logging
import warnings

import click

from .errors import SlimWarning


@contextlib.contextmanager
def one_line_warnings():
    seen: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None):
        text = " ".join(str(message).split())
        if issubclass(category, SlimWarning):
            line_out = f"onnxslim: warning: {text}"
        elif issubclass(category, RuntimeWarning):
            line_out = f"onnxslim: warning: numerical: {text}"
        else:
            line_out = f"onnxslim: warning: {category.__name__}: {text}"
        if line_out not in seen:
            seen.add(line_out)
            click.echo(line_out, err=True)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


@contextlib.contextmanager
def quiet_logger(name: str, level: int = logging.ERROR):
    """A library's logger (onnxscript's folder logs every node it skips) held at `level` for a block: what
    matters reaches our report, not the terminal."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)
