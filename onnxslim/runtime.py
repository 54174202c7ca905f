"""Everything the passes and the validation ask of onnxruntime, in one place.

- `session`: a CPU session of an in-memory model (models over 2 GB through a temporary folder with external
  data), with threads, basic optimizations, profiling;
- `run`, `run_once`: outputs per feed, failures as one-line SlimErrors;
- `with_outputs`, `TensorTap`, `tapped_session`: inner tensors returned as extra graph outputs;
- `weights_as_inputs`: a copy of a model whose chosen weights are graph inputs, so one session evaluates
  any set of weights (pruning's plan evaluation, low-rank's rank allocation);
- `median_latency`, `paired_latency`: timers.
The output metrics are in metrics.py.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from typing import Iterable, Iterator

import numpy as np
import onnx

from . import ondisk
from .errors import SlimError
from .lazy_import import lazy_module
from .graph import TWO_GB, ExternalWriter, fits_protobuf, infer_shapes, light_copy
from .progress import silent
from .units import first_line

ort = lazy_module("onnxruntime")

LOAD_FAILED = "onnxruntime cannot load the model"
# tensors at least this large go to the external data file when a model must be saved for onnxruntime
_EXTERNAL_MIN_BYTES = 1024



# -- sessions -----------------------------------------------------------------------------------------

def session(model: onnx.ModelProto | str | os.PathLike, *, threads: int | None = None, basic: bool = False,
            profile_prefix: str | None = None, optimized_path: str | None = None, arena: bool | str = True,
            hand_over: bool = False) -> ort.InferenceSession:
    """A CPU onnxruntime session of a model or a file (.onnx or .ort); models over 2 GB go through a temp
    folder with external data. `basic`:
    only basic graph optimizations (onnxruntime's Conv+Add fusion drops a tapped Conv output whose weight
    is a graph input; and basic does not fuse Q/DQ into int8 kernels, so a QDQ graph computes exact int32
    accumulation, what TensorRT computes). `profile_prefix`: write onnxruntime's per-node profile there
    (end_profiling()). `optimized_path`: save the graph onnxruntime runs (after its fusions) there. `arena`:
    False returns activation memory after each run (for the many small sessions kept at once); "shared":
    one process-wide arena for all such sessions (they run one at a time; without an arena each run maps
    and faults in its buffers again: 1.5x the CPU time on EfficientNet-Lite0). `hand_over`: large inline
    weights go to onnxruntime as arrays, not serialized (a MiniLM-L6 session 0.34 -> 0.13 CPU s, same
    outputs bit for bit; the low-rank pass builds one per level)."""
    opts = ort.SessionOptions()
    if arena == "shared":
        _register_shared_arena()
        opts.add_session_config_entry("session.use_env_allocators", "1")
    else:
        opts.enable_cpu_mem_arena = arena
    opts.log_severity_level = 4  # errors come back as exceptions, said in one line; no log lines on stderr
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    if optimized_path:
        opts.optimized_model_filepath = optimized_path
    if basic:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    try:
        if not isinstance(model, onnx.ModelProto):
            return ort.InferenceSession(os.fspath(model), opts, providers=providers)
        on_disk = ondisk.session_source(model, inline=hand_over)
        if on_disk is not None and len(on_disk[0]) < TWO_GB:  # weights read from the input's data file
            serialized, folder, arrays = on_disk
            if folder:
                opts.add_session_config_entry("session.model_external_initializers_file_folder_path", folder)
            values = [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays.values()]
            if arrays:
                opts.add_external_initializers(list(arrays), values)
            sess = ort.InferenceSession(serialized, opts, providers=providers)
            sess._onnxslim_arrays = values  # onnxruntime uses their memory: they must live as long as it
            return sess
        if fits_protobuf(model) and not ondisk.lazy_tensors(model):
            return ort.InferenceSession(model.SerializeToString(), opts, providers=providers)
        tmp = tempfile.TemporaryDirectory(prefix="onnxslim-")
        sess = ort.InferenceSession(save_external(model, tmp.name), opts, providers=providers)
        # the weights may be memory-mapped from the folder: it must live as long as the session
        sess._onnxslim_tmpdir = tmp
        return sess
    except SlimError:
        raise
    except Exception as err:
        raise SlimError(f"{LOAD_FAILED}: {first_line(err)}") from None


_SHARED_ARENA: list = []


def _register_shared_arena() -> None:
    if not _SHARED_ARENA:
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        # grow by what is asked (not powers of two): the arena's peak is the largest session's
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, -1, -1))
        _SHARED_ARENA.append(info)


def save_external(model: onnx.ModelProto, folder: str, min_bytes: int = _EXTERNAL_MIN_BYTES) -> str:
    """Write the model with its large raw tensors in one data file, without copying the whole proto first."""
    data_name = "weights.data"
    with open(os.path.join(folder, data_name), "wb") as data:
        light = light_copy(model, convert=ExternalWriter(data, data_name, min_bytes))
    if light.ByteSize() >= TWO_GB:
        raise SlimError("the model's graph is over 2 GB even without its initializers (huge Constant nodes?); onnxruntime cannot load it")
    path = os.path.join(folder, "model.onnx")
    with open(path, "wb") as fh:
        fh.write(light.SerializeToString())
    return path


def as_session(model_or_session, threads=None) -> ort.InferenceSession:
    if not isinstance(model_or_session, onnx.ModelProto):  # a session (or anything with its run())
        return model_or_session
    return session(model_or_session, threads=threads)


# -- runs ---------------------------------------------------------------------------------------------

def run_once(sess, feed: dict, names=None, what: str = "onnxruntime failed to run the model") -> list:
    """One run; an onnxruntime failure (a model onnxruntime loads but cannot execute) is one line."""
    try:
        return sess.run(names, feed)
    except Exception as err:
        raise SlimError(f"{what}: {first_line(err)}") from None


def run(model_or_session, feeds: list[dict], *, progress=None, label: str = "running") -> list[dict[str, np.ndarray]]:
    """Outputs per feed: [{output name: array}], one dict per feed dict; `progress` shows `label`."""
    sess = as_session(model_or_session)
    names = [o.name for o in sess.get_outputs()]
    results = []
    with (progress or silent)(label, total=len(feeds)) as bar:
        for feed in feeds:
            results.append(dict(zip(names, run_once(sess, feed, names))))
            bar.update(1)
    return results


def outputs_on(model: onnx.ModelProto, feeds: list[dict], *, basic: bool = False, threads: int | None = None,
               what: str = "onnxruntime failed to run the model") -> list[dict[str, np.ndarray]]:
    """Outputs per feed of a model built once into a session; feed entries it has no input for are dropped."""
    sess = session(model, threads=threads, basic=basic)
    names = [o.name for o in sess.get_outputs()]
    inputs = {i.name for i in sess.get_inputs()}
    return [dict(zip(names, run_once(sess, {k: v for k, v in f.items() if k in inputs}, names, what))) for f in feeds]


# -- inner tensors ------------------------------------------------------------------------------------

def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor we can learn about (inputs, outputs, initializers, inferred value_info)."""
    types = {}
    try:
        inferred = infer_shapes(model)
    except Exception:  # a model shape inference cannot handle still runs; unknown types fall back to float
        inferred = model
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types.setdefault(init.name, init.data_type)
    return types


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of `model` whose graph outputs are its own outputs followed by `names` (deduplicated)."""
    produced = {o for n in model.graph.node for o in n.output} | {i.name for i in model.graph.input}
    produced |= {i.name for i in model.graph.initializer}
    missing = [n for n in names if n not in produced]
    if missing:
        raise SlimError(f"tensor(s) {missing[:3]} are not in the model's graph")
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    extra = [n for n in dict.fromkeys(names) if n not in present]
    if extra:
        types = elem_types(model)
        for name in extra:
            copy.graph.output.append(onnx.helper.make_tensor_value_info(name, types.get(name, onnx.TensorProto.FLOAT), None))
    return copy


class TensorTap:
    """One session on a copy of the model that also returns the named inner tensors; `tap(feed) -> dict`."""

    def __init__(self, model: onnx.ModelProto, names: list[str], *, hand_over: bool = False):
        self.model = with_outputs(model, names)
        self.session = session(self.model, hand_over=hand_over)
        self.output_names = [o.name for o in self.model.graph.output]
        self._feeds = {i.name for i in self.session.get_inputs()}

    def __call__(self, feed: dict) -> dict[str, np.ndarray]:
        feed = {k: v for k, v in feed.items() if k in self._feeds}
        values = run_once(self.session, feed, self.output_names, "onnxruntime failed on a calibration batch")
        return dict(zip(self.output_names, values))


def stream_tensors(model: onnx.ModelProto, names: list[str], batches: Iterable[dict], *, progress=None) -> Iterator[dict[str, np.ndarray]]:
    """Per batch, {name: array} for the model's outputs and the requested inner tensors.

    `progress`, if given, is a bar with `.update(n)` advanced by one per batch.
    """
    tap = TensorTap(model, names)
    for feed in batches:
        yield tap(feed)
        if progress is not None:
            progress.update(1)


_TAPPED: dict = {}   # (id(model), names) -> (model, session, output names), most recent last
_TAPPED_KEEP = 4     # the sensitivity allocation taps the same two models every step (30 sessions built
                     # for EfficientNet-Lite0 at 70%, 2% of the pass's time); repair waves each tap others


def tapped_session(model: onnx.ModelProto, names: list[str]):
    """A session of `model` whose outputs also include `names`, and its output names; the last few are
    reused (the model object is kept with its session, so its id cannot be recycled meanwhile)."""
    key = (id(model), tuple(names))
    if key in _TAPPED:
        entry = _TAPPED.pop(key)
        _TAPPED[key] = entry
        return entry[1], entry[2]
    tapped = with_outputs(model, names)
    entry = (model, session(tapped, basic=fusion_loses_tap(model, names)), [o.name for o in tapped.graph.output])
    _TAPPED[key] = entry
    while len(_TAPPED) > _TAPPED_KEEP:
        _TAPPED.pop(next(iter(_TAPPED)))
    return entry[1], entry[2]


def clear_tapped() -> None:
    """Drop the reused sessions (end of a pass: they hold the models' weights)."""
    _TAPPED.clear()


def fusion_loses_tap(model: onnx.ModelProto, names: list[str]) -> bool:
    """True when a tapped tensor is the output of a Conv whose weight is a graph input and that feeds an Add
    (a projection shortcut in the parametric model): onnxruntime's Conv+Add fusion then fails to load the
    session ("Failed to find node output"), so such a session gets basic optimizations only."""
    graph_inputs = {i.name for i in model.graph.input}
    wanted = set(names)
    conv_taps = {n.output[0] for n in model.graph.node
                 if n.op_type == "Conv" and n.output[0] in wanted and len(n.input) > 1 and n.input[1] in graph_inputs}
    return any(n.op_type == "Add" and conv_taps.intersection(n.input) for n in model.graph.node)


# -- weights fed as inputs ----------------------------------------------------------------------------

def weights_as_inputs(model: onnx.ModelProto, slots: dict[str, dict[int, tuple]]) -> onnx.ModelProto:
    """A copy of `model` where input `index` of the node whose first output is `key` reads a new float graph
    input: slots = {key: {index: (input name, elem type, shape)}}. An index past the node's inputs is
    appended (a bias the node did not have). Initializers nothing reads any more are dropped."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    replaced = set()
    for node in copy.graph.node:
        for index, (name, elem_type, shape) in sorted(slots.get(node.output[0] if node.output else None, {}).items()):
            while len(node.input) < index:
                node.input.append("")
            if index < len(node.input):
                replaced.add(node.input[index])
                node.input[index] = name
            else:
                node.input.append(name)
            copy.graph.input.append(onnx.helper.make_tensor_value_info(name, elem_type, list(shape)))
    still_used = {i for n in copy.graph.node for i in n.input}
    keep = [t for t in copy.graph.initializer if t.name not in replaced or t.name in still_used]
    del copy.graph.initializer[:]
    copy.graph.initializer.extend(keep)
    return copy


# -- latency ------------------------------------------------------------------------------------------

def median_latency(model_or_session, feed: dict, *, runs: int = 50, warmup: int = 3, budget_s: float = 5.0,
                   min_runs: int = 3, threads: int | None = None) -> float:
    """Median seconds per run of `feed` (batch as given): `warmup` untimed runs, then up to `runs` timed
    runs, stopping early once `budget_s` is spent (but never below `min_runs`)."""
    sess = as_session(model_or_session, threads=threads)
    start = time.perf_counter()
    for _ in range(warmup):
        run_once(sess, feed)
        if time.perf_counter() - start > budget_s / 4:
            break
    times = []
    start = time.perf_counter()
    while len(times) < runs:
        t0 = time.perf_counter()
        run_once(sess, feed)
        times.append(time.perf_counter() - t0)
        if len(times) >= min(min_runs, runs) and time.perf_counter() - start > budget_s:
            break
    return statistics.median(times)


def paired_latency(sess_a, sess_b, feed: dict, *, budget_s: float = 10.0, max_runs: int = 5000,
                   block_s: float = 0.15, skip: int = 2, min_runs: int = 3) -> tuple[float, float, int, tuple[float, float]]:
    """Median seconds per run of two sessions measured in alternating blocks (A,B,B,A,...) so that machine
    load and clock drift hit both alike. Returns (median A, median B, timed runs each, (25th, 75th
    percentile of the per-block-pair ratio B/A): the run-to-run spread of the ratio).

    The first `skip` runs of every block are not timed: onnxruntime's worker threads spin for a while after
    a run, so the first runs of a block share the cores with the other session's spinning threads (measured
    on EfficientNet-Lite0, blocks of 5 untrimmed runs put one 70%-MACs model anywhere from 0.65x to 0.87x of
    the original; 40-run blocks without their first runs gave 0.73-0.75x three times out of three)."""
    a, b = as_session(sess_a), as_session(sess_b)
    first = []
    for sess in (a, b):  # warm-up; its duration also sizes the blocks
        run_once(sess, feed)
        t0 = time.perf_counter()
        run_once(sess, feed)
        first.append(time.perf_counter() - t0)
    per_run = max(sum(first) / 2, 1e-6)
    block = max(1, min(int(block_s / per_run), int(budget_s / per_run / 8) - skip))
    times_a, times_b, ratios = [], [], []
    start = time.perf_counter()
    while len(times_a) < max_runs:
        if len(ratios) % 2 == 0:
            block_a, block_b = _timed_block(a, feed, skip, block), _timed_block(b, feed, skip, block)
        else:
            block_b = _timed_block(b, feed, skip, block)
            block_a = _timed_block(a, feed, skip, block)
        times_a += block_a
        times_b += block_b
        ratios.append(statistics.median(block_b) / statistics.median(block_a))
        if len(times_a) >= min_runs and time.perf_counter() - start > budget_s:
            break
    q25, q75 = (float(np.percentile(ratios, q)) for q in (25, 75))
    return statistics.median(times_a), statistics.median(times_b), len(times_a), (q25, q75)


def _timed_block(sess, feed: dict, skip: int, runs: int) -> list[float]:
    """Seconds of `runs` runs, after `skip` untimed ones."""
    for _ in range(skip):
        run_once(sess, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run_once(sess, feed)
        times.append(time.perf_counter() - t0)
    return times
