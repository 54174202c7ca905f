"""Modules imported on first use.

onnxruntime loads its native library on import (about 0.1 s of CPU): a bare `onnxslim model.onnx
--no-validate` on a small model never runs it, and there the start-up is most of the run.

onnx-ir (under the cleanup pass's constant folder) imports sympy at import time, about 0.3 s of CPU
(sympy/sympy#14854), for symbolic-dim arithmetic that the folder only needs on models whose dims are
expressions: `defer_sympy` puts stand-ins for sympy and for onnx-ir's symbolic-shape parser in
`sys.modules`, each importing the real module on its first attribute read.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def lazy_module(name: str):
    """The module `name`, executed when one of its attributes is first read (the standard library's
    LazyLoader recipe; for modules we read through this handle)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


class _StandIn(types.ModuleType):
    """Stands in `sys.modules` for a module another library imports with a plain `import` statement.

    LazyLoader's modules do not survive that: the import system reads `__spec__` of a module it finds in
    `sys.modules`, which executes it. The stand-in has `__spec__ = None` (an ordinary attribute), so the
    statement returns it as it is; the first other attribute read imports the real module, copies its
    namespace in and hands `sys.modules` back to it."""

    def __getattr__(self, attr: str):
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        self.__dict__.update(real.__dict__)
        return getattr(real, attr)


def defer_import(name: str) -> None:
    """Import `name` on its first use by whoever imported it (no-op once it is imported)."""
    if name not in sys.modules:
        sys.modules[name] = _StandIn(name)


def defer_sympy() -> None:
    """sympy and onnx-ir's parser of symbolic dims (the one module of onnx-ir that uses sympy at import)."""
    if "onnx_ir" not in sys.modules:
        defer_import("sympy")
        defer_import("onnx_ir._symbolic_shapes")
