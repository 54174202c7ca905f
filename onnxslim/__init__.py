"""onnxslim: make ONNX models smaller and faster, and prove the outputs still hold."""
from .errors import SlimError
from .lazy_import import defer_sympy

defer_sympy()  # onnx-ir imports sympy at import time (0.3 s); see lazy_import

__version__ = "0.1.0"

__all__ = ["SlimError", "__version__", "optimize", "Result"]

# submodules reachable as attributes after a bare `import onnxslim` (the README's `onnxslim.channels.analyze`)
_SUBMODULES = ("calibration", "channels", "cost", "graph", "html_report", "inputs", "ort_format", "passes", "pipeline", "validate")


def __getattr__(name):
    # the pipeline pulls in onnxruntime; keep `import onnxslim` cheap for tools that only need errors/graph
    if name in ("optimize", "Result"):
        from . import pipeline
        return getattr(pipeline, name)
    if name in _SUBMODULES:
        import importlib
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'onnxslim' has no attribute '{name}'")
