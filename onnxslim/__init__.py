"""onnxslim: make ONNX models smaller and faster, and prove the outputs still hold."""
from .errors import SlimError

__version__ = "0.1.0"

__all__ = ["SlimError", "__version__", "optimize", "Result"]


def __getattr__(name):
    # the pipeline pulls in onnxruntime; keep `import onnxslim` cheap for tools that only need errors/graph
    if name in ("optimize", "Result"):
        from . import pipeline
        return getattr(pipeline, name)
    raise AttributeError(name)
