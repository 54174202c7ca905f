"""Writing the --report file: JSON, or a self-contained HTML page when the name ends in .html."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from . import html_report


def write_report(path: Path, report: dict) -> None:
    """Atomically: a temporary file beside `path`, renamed over it."""
    if path.suffix.lower() in (".html", ".htm"):
        text = html_report.render(json.loads(json.dumps(report, default=json_default)))
    else:
        text = json.dumps(report, indent=2, default=json_default)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
