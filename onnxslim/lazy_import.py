"""Modules imported on first use (the standard library's LazyLoader recipe).

onnxruntime loads its native library on import (about 0.1 s of CPU): a bare `onnxslim model.onnx
--no-validate` on a small model never runs it, and there the start-up is most of the run."""
from __future__ import annotations

import importlib.util
import sys


def lazy_module(name: str):
    """The module `name`, executed when one of its attributes is first read."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
