"""Writing the --report file: JSON, or a self-contained HTML page when the name ends in .html."""
from __future__ import annotations

import json
import os
from pathlib import Path
from . import html_report
import tempfile
import numpy as np


def write_report(path: Path, report: dict) -> None:
    if path.suffix.lower() in (".html", ".htm"):
        html_report.write(path, json.loads(json.dumps(report, default=json_default)))
    else:
        _write_json(path, report)


def _write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=2, default=json_default)
    os.replace(tmp, path)


def json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
