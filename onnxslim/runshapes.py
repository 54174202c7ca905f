"""Concrete input shapes for the steps that must run the model (validation, calibration, latency, data-driven
criteria), and where they came from.

Nothing else needs them: channel analysis, weight-importance pruning, low-rank by energy, int8-dynamic and the
lossless rewrites work on symbolic dims. Order, per input: --input-shape, then the --data / --calib arrays,
then the preprocess file's crop (image folders), then the model's own dims with batch 1; a dim still dynamic
after that gets a size the original model actually runs with: first what the graph suggests (fixed dims of
the other inputs on the same axis; multiples of the network's total stride come first), then a short list of
common sizes. Each try runs the original once in onnxruntime; the first that runs wins.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import onnx


from .errors import SlimError
from .graph import fits_protobuf
from .runtime import LOAD_FAILED, session
from .inputs import check_run_memory, model_inputs, random_feeds, symbolic_shapes

IMAGE_SIZES = (224, 256, 320, 640, 32, 48, 64, 128, 16, 1)
SEQUENCE_SIZES = (16, 32, 64, 128, 256, 8, 1)
MAX_TRIES = 24        # onnxruntime runs of the original, at most
MAX_SECONDS = 90.0    # and this much time for them
_DOWNSAMPLERS = ("Conv", "MaxPool", "AveragePool", "ConvInteger", "QLinearConv")


@dataclass
class RunShapes:
    shapes: dict | None                      # {input: concrete shape}, None when no runnable shape was found
    sources: dict = field(default_factory=dict)  # {input: "--input-shape" | "--data" | "--calib" | "preprocess" | "model" | "auto"}
    reason: str | None = None                # why `shapes` is None
    tried: int = 0                           # onnxruntime runs spent searching

    def report(self) -> dict:
        """{input: {"shape": [...], "source": ...}} for the validation report."""
        if self.shapes is None:
            return {}
        return {name: {"shape": list(shape), "source": self.sources.get(name, "model")} for name, shape in self.shapes.items()}


def choose(model: onnx.ModelProto, overrides: dict | None = None, hints: dict | None = None, *,
           probe: bool = True) -> RunShapes:
    """Runnable shapes for `model`. `hints`: {input: (source, concrete shape)} from data, calibration or
    preprocessing, used after `overrides`. `probe=False` never runs the model: dims left dynamic give None.
    """
    overrides = dict(overrides or {})
    sources = {name: "--input-shape" for name in overrides}
    for name, (source, shape) in (hints or {}).items():
        if name not in overrides:
            overrides[name], sources[name] = tuple(shape), source
    shapes = symbolic_shapes(model, overrides)
    missing = [name for name, shape in shapes.items() if shape is None]
    if missing:
        return RunShapes(None, sources, f"input(s) {missing} have no shape in the model")
    shapes = _unify(model, shapes)
    free = {d for shape in shapes.values() for d in shape if not isinstance(d, int)}
    for name, shape in shapes.items():
        sources.setdefault(name, "auto" if any(d in free for d in shape) else "model")
    if not free:
        return RunShapes(shapes, sources)
    if not probe:
        return RunShapes(None, sources, f"dynamic dims {sorted(free)} have no given size")
    return _search(model, shapes, free, sources)


def _unify(model: onnx.ModelProto, shapes: dict) -> dict:
    """A named dim that some input fixes (`batch` set to 1 on input 0, `sequence` by --calib arrays) takes
    that size on every input that names it."""
    known = {}
    for spec in model_inputs(model):
        for axis, d in enumerate(spec.shape or ()):
            got = shapes[spec.name][axis] if axis < len(shapes[spec.name]) else None
            if isinstance(d, str) and d and isinstance(got, int):
                known.setdefault(d, got)
    return {name: tuple(known.get(d, d) if isinstance(d, str) else d for d in shape) for name, shape in shapes.items()}


def _search(model: onnx.ModelProto, shapes: dict, free: set, sources: dict) -> RunShapes:
    smallest = {name: tuple(d if isinstance(d, int) else 1 for d in shape) for name, shape in shapes.items()}
    try:  # a tensor over the budget at every size (a ConstantOfShape bomb): no session, no run
        check_run_memory(model, smallest)
    except SlimError as err:
        return RunShapes(None, sources, str(err))
    sess = _session(model)
    if isinstance(sess, str):
        return RunShapes(None, sources, sess)
    started, tried, last_error = time.perf_counter(), 0, ""
    for values in _assignments(model, shapes, sorted(free)):
        if tried >= MAX_TRIES or time.perf_counter() - started > MAX_SECONDS:
            break
        concrete = {name: tuple(values.get(d, d) for d in shape) for name, shape in shapes.items()}
        try:  # a size whose feeds or activations (shape inference) exceed the memory budget is never run
            check_run_memory(model, concrete)
        except SlimError as err:
            last_error = str(err)
            continue
        tried += 1
        try:
            sess.run(None, random_feeds(model, concrete, seed=0)[0])
        except Exception as err:  # noqa: BLE001 - any onnxruntime failure means: not this size
            last_error = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
            continue
        return RunShapes(concrete, sources, tried=tried)
    return RunShapes(None, sources, f"no size tried for dynamic dims {sorted(free)} runs the model "
                                    f"({tried} tried; last error: {last_error})", tried)


def _session(model: onnx.ModelProto):
    """A session of the original, or why there is none (a custom op onnxruntime lacks, an invalid model...)."""
    if not fits_protobuf(model):
        return "the model is over 2 GB; give --input-shape for its dynamic dims"
    try:
        return session(model)
    except SlimError as err:
        return f"onnxruntime cannot load the original model ({str(err).removeprefix(LOAD_FAILED + ': ')[:200]})"


def _assignments(model: onnx.ModelProto, shapes: dict, free: list):
    """Candidate {symbol: size} dicts: every symbol the same size first, then pairs for two symbols."""
    sizes = {sym: _candidates(model, shapes, sym) for sym in free}
    seen = set()
    first = sizes[free[0]]
    for size in first:
        values = {sym: size for sym in free}
        seen.add(tuple(values.values()))
        yield values
    if len(free) == 2:
        pairs = sorted(((a, b) for a in sizes[free[0]] for b in sizes[free[1]]), key=lambda p: p[0] * p[1])
        for a, b in pairs:
            if (a, b) not in seen:
                yield {free[0]: a, free[1]: b}


def _candidates(model: onnx.ModelProto, shapes: dict, symbol) -> list[int]:
    """Sizes for one dynamic dim: hints from the graph, then the common sizes (stride multiples first)."""
    specs = {s.name: s for s in model_inputs(model)}
    axes = [(name, axis) for name, shape in shapes.items() for axis, d in enumerate(shape) if d == symbol]
    integer = any(not np.issubdtype(specs[name].dtype, np.floating) for name, _ in axes)
    # the same axis fixed on another input of the same rank (image pairs, masks)
    hints = [shape[axis] for name, axis in axes for other, shape in shapes.items()
             if other != name and len(shape) == len(shapes[name]) and isinstance(shape[axis], int) and shape[axis] > 1]
    common = list(SEQUENCE_SIZES if integer else IMAGE_SIZES)
    stride = _total_stride(model)
    common.sort(key=lambda s: (s % stride != 0) if s >= stride else 1)  # stable: keeps the list's order otherwise
    return list(dict.fromkeys(hints + common))


def _total_stride(model: onnx.ModelProto) -> int:
    """2 ** (strided downsampling nodes), capped at 32: what an image side should be a multiple of."""
    count = 0
    for node in model.graph.node:
        if node.op_type in _DOWNSAMPLERS:
            strides = next((list(a.ints) for a in node.attribute if a.name == "strides"), [])
            count += any(s > 1 for s in strides)
    return min(2 ** count, 32)
