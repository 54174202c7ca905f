"""What every pass receives besides the model and its own config: data, shapes, progress, seed.

Options never live in globals: each pass gets `run(model, config, ctx) -> PassResult`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import onnx

from .progress import progress as _progress


@dataclass
class PassResult:
    model: onnx.ModelProto
    report: dict  # JSON-serializable; what the pass did, skipped (with reasons) and measured
    modified: bool = True  # False: the model is the input, unchanged (onnx-ir's PassResult.modified)
    # by-products a caller may want besides the result (e.g. prune: the pruned model before repair)
    extras: dict = field(default_factory=dict)


@dataclass
class Context:
    # calibration.Dataset or None: real data for importance, repair, quantization, data-aware SVD
    calibration: Any = None
    # concrete shapes for dynamic inputs, {name: tuple}; used for random feeds and MACs
    input_shapes: dict = field(default_factory=dict)
    # progress(label, total) -> context manager with .update(n)
    progress: Callable = _progress
    seed: int = 0
    # onnxruntime intra-op threads for timing (validation, the prune pass's latency profile); None = defaults
    threads: int | None = None
