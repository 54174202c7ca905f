"""Weights left on disk: the large external tensors of a model file are referenced, not read, while it is edited.

`external.reference_external_data` (at load) leaves each large external tensor as a reference whose `location`
is the resolved absolute path of its data file (checked inside the model's folder first) with an explicit
offset and length: a *lazy* tensor. Passes see its dims and type; its bytes are read only where a step needs
its values, copied file to file when the model is saved
(`copy_into`) and read by onnxruntime from the data file itself (`session_source`). A weight a pass computes
from one on disk (pruning, folding) is written to a temp file as it is produced (`spill`, `disk_constant`,
`spill_computed`) and becomes a lazy tensor too, so the edited model is never held in memory either.

Why references in the onnx proto rather than onnx-ir's memory-mapped tensors throughout (benchmarks/RESULTS.md,
issue 14): every pass edits onnx protos and onnx-graphsurgeon graphs; both carry an external TensorProto they
never read as it is (onnx-ir's folder keeps it an `ExternalTensor`, gs's exporter reuses the proto of a
`LazyValues`), so only the places that read values or hand the model to onnx's checker and onnxruntime needed
to change. And a memory map counts its touched pages in the process's RSS; plain reads in chunks do not.
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnx.numpy_helper

from .external import all_tensors, location_of
from .light import SMALL_TENSOR, light_copy

CHUNK = 64 * 2**20  # bytes read at a time when copying or scanning a lazy tensor
PLACEHOLDER = "weights.data"
IN_MEMORY = "onnxslim-in-memory.bin"  # the stand-in location of a weight handed to onnxruntime as an array
HAND_OVER_BYTES = 2**16  # inline tensors from this size are handed over (sessions) or left out (checker)


def is_lazy(tensor: onnx.TensorProto) -> bool:
    # only load_model writes absolute locations (a model file's own are refused as outside its folder)
    return tensor.data_location == onnx.TensorProto.EXTERNAL and os.path.isabs(location_of(tensor))


def main_tensors(model: onnx.ModelProto):
    """The tensors light_copy sees, the only ones left on disk: the main graph's initializers and Constant values."""
    yield from model.graph.initializer
    for node in model.graph.node:
        if node.op_type == "Constant":
            yield from (a.t for a in node.attribute if a.type == onnx.AttributeProto.TENSOR)


def stays_on_disk(tensor: onnx.TensorProto, dims_bytes) -> bool:
    """Large, numeric, and its `length` what its dims call for (else it is read, and checked as before)."""
    if tensor.data_location != onnx.TensorProto.EXTERNAL or math.prod(int(d) for d in tensor.dims) <= SMALL_TENSOR:
        return False
    length = next((e.value for e in tensor.external_data if e.key == "length"), None)
    want = dims_bytes(tensor)
    return want is not None and (length is None or length == str(want))


def lazy_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    return [t for t in all_tensors(model) if is_lazy(t)]


def source(tensor: onnx.TensorProto) -> tuple[str, int, int]:
    """(file, offset, length) of a lazy tensor (load_model wrote all three)."""
    info = {e.key: e.value for e in tensor.external_data}
    return info["location"], int(info.get("offset") or 0), int(info["length"])


def lazy_bytes(tensor: onnx.TensorProto) -> int:
    return source(tensor)[2]


def disk_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the model's weights left on disk."""
    return sum(lazy_bytes(t) for t in lazy_tensors(model))


def chunks(tensor: onnx.TensorProto, size: int = CHUNK):
    """The tensor's bytes, `size` at a time (plain reads: the page cache holds them, not our RSS)."""
    path, offset, length = source(tensor)
    with open(path, "rb") as fh:
        fh.seek(offset)
        while length > 0:
            block = fh.read(min(size, length))
            if not block:
                raise OSError(f"external data file {path} is shorter than tensor '{tensor.name}' needs")
            length -= len(block)
            yield block


def read(tensor: onnx.TensorProto) -> bytes:
    return b"".join(chunks(tensor))


def read_array(tensor: onnx.TensorProto) -> np.ndarray:
    """A lazy tensor as a writable numpy array, read straight into it (one copy of the data in memory)."""
    array = np.empty(tuple(int(d) for d in tensor.dims), onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type))
    view = memoryview(array.reshape(-1).view(np.uint8))
    at = 0
    for block in chunks(tensor):
        view[at:at + len(block)] = block
        at += len(block)
    return array


def to_array(tensor: onnx.TensorProto) -> np.ndarray:
    """numpy_helper.to_array that also reads a lazy tensor (onnx's reader refuses its absolute location)."""
    return read_array(tensor) if is_lazy(tensor) else onnx.numpy_helper.to_array(tensor)


def same_values(tensor: onnx.TensorProto, array: np.ndarray) -> bool:
    """Whether `array` holds exactly the lazy tensor's bytes (dtype and dims too)."""
    if array.dtype != onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type) or array.shape != tuple(int(d) for d in tensor.dims):
        return False
    flat = memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
    at = 0
    for block in chunks(tensor):
        if flat[at:at + len(block)] != block:
            return False
        at += len(block)
    return at == len(flat)


def copy_into(tensor: onnx.TensorProto, fh) -> int:
    """Append a lazy tensor's bytes to an open file; the number of bytes written."""
    written = 0
    for block in chunks(tensor):
        fh.write(block)
        written += len(block)
    return written


def materialize(model: onnx.ModelProto) -> None:
    """Read every lazy tensor into the proto (the steps not yet written for references: pruning, low-rank,
    quantization, a caller's proto)."""
    for tensor in lazy_tensors(model):
        data = read(tensor)
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT
        tensor.raw_data = data


def all_finite(tensor: onnx.TensorProto, dtype) -> bool:
    item = np.dtype(dtype).itemsize
    return all(bool(np.isfinite(np.frombuffer(b, dtype=dtype)).all()) for b in chunks(tensor, CHUNK // item * item))


def _relative(folder: str, names: dict | None = None):
    """A convert for light_copy: lazy tensors become references relative to `folder`, where `names` maps a
    data file to its name there (a hard link), if it is not in the folder itself."""
    names = names or {}

    def convert(tensor: onnx.TensorProto) -> onnx.TensorProto:
        if not is_lazy(tensor):
            return tensor
        out = onnx.TensorProto()
        out.CopyFrom(tensor)
        for entry in out.external_data:
            if entry.key == "location":
                entry.value = names.get(entry.value) or os.path.relpath(entry.value, folder)
        return out
    return convert


_links: dict = {}  # frozenset of data files -> (TemporaryDirectory, {file: name}): one per set, kept for the process


def one_folder(lazy: list) -> tuple[str | None, dict]:
    """(folder, {data file: its name there}) holding every data file the lazy tensors read, for onnxruntime,
    which refuses a location outside the folder it is given (through symlinks too): their own folder when
    they share one (the input's), else a temp folder of hard links to them (the input's data file and the
    temp weights file of `spill`). (None, {}) when a file cannot be linked (another file system): the
    caller then writes a copy of the model), as when there is no lazy tensor."""
    files = {source(t)[0] for t in lazy}
    folders = {os.path.dirname(f) for f in files}
    if len(folders) <= 1:
        return (folders.pop() if folders else None), {}
    key = frozenset(files)
    if key not in _links:
        tmp = tempfile.TemporaryDirectory(prefix="onnxslim-links-")
        names = {f: f"{i}.data" for i, f in enumerate(sorted(files))}
        try:
            for f, name in names.items():
                os.link(f, os.path.join(tmp.name, name))
        except OSError:
            tmp.cleanup()
            return None, {}
        _links[key] = (tmp, names)
    tmp, names = _links[key]
    return tmp.name, names


def _left_out(tensor: onnx.TensorProto) -> bool:
    return is_lazy(tensor) or (tensor.HasField("raw_data") and tensor.ByteSize() >= HAND_OVER_BYTES)


def _placeholder(tensor: onnx.TensorProto) -> onnx.TensorProto:
    """A large tensor, lazy or inline, as a reference to the checker's empty placeholder file."""
    if not _left_out(tensor):
        return tensor
    out = onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims, doc_string=tensor.doc_string,
                           data_location=onnx.TensorProto.EXTERNAL)
    out.external_data.add(key="location", value=PLACEHOLDER)
    return out


def check_onnx(model: onnx.ModelProto, *, full_check: bool = False) -> None:
    """onnx.checker on the model; one with lazy or large inline weights is checked as a file whose
    references name an empty placeholder (the checker checks structure and that the data file exists; of
    an inline weight only its byte count, which the caller has checked with `check.check_tensors`), so the
    weights are neither read nor serialized (in memory the checker copies the whole model twice: 0.19 s
    of a 54 MB model's 0.95 s bare run)."""
    if not any(_left_out(t) for t in main_tensors(model)):
        onnx.checker.check_model(model, full_check=full_check)
        return
    light = light_copy(model, convert=_placeholder)
    with tempfile.TemporaryDirectory(prefix="onnxslim-check-") as folder:
        Path(folder, PLACEHOLDER).touch()
        path = os.path.join(folder, "model.onnx")
        with open(path, "wb") as fh:
            fh.write(light.SerializeToString())
        onnx.checker.check_model(path, full_check=full_check)




# -- weights a pass rewrites, written to disk as they are produced ------------------------------------

SPILL_NAME = "rewritten.data"
_spill: list = []  # [TemporaryDirectory, open file]: one per process, made on first use, removed at exit


def _spill_file():
    if not _spill:
        folder = tempfile.TemporaryDirectory(prefix="onnxslim-weights-")
        _spill.extend([folder, open(os.path.join(folder.name, SPILL_NAME), "wb")])
    return _spill[1]


def spillable(array) -> bool:
    """Large (shape inference never needs its values) and of a type onnx stores as raw bytes."""
    return (isinstance(array, np.ndarray) and array.size > SMALL_TENSOR and array.dtype.kind in "biuf"
            and array.dtype.byteorder in "=|<")


def spill(name: str, array: np.ndarray) -> onnx.TensorProto:
    """Append `array` to this process's temp weights file (4 KB aligned) and return a lazy tensor over it:
    a weight a pass rewrites in a model whose weights are on disk goes to disk too, instead of being held
    (as an array, then again as the exported proto's bytes) until the model is saved. The file lives in
    the system's temp folder (TMPDIR) and is removed when the process exits."""
    fh = _spill_file()
    fh.write(b"\0" * (-fh.tell() % 4096))
    offset = fh.tell()
    fh.write(memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8)))
    fh.flush()  # readers (chunks, onnxruntime) open the file by name
    tensor = onnx.TensorProto(name=name, data_type=onnx.helper.np_dtype_to_tensor_dtype(array.dtype), dims=array.shape,
                              data_location=onnx.TensorProto.EXTERNAL)
    for key, value in (("location", fh.name), ("offset", str(offset)), ("length", str(array.nbytes))):
        tensor.external_data.add(key=key, value=value)
    return tensor


def session_source(model: onnx.ModelProto, inline: bool = False) -> tuple[bytes, str | None, dict] | None:
    """(serialized model, folder, {name: array}) for an onnxruntime session that reads the lazy tensors from
    their own data file (`session.model_external_initializers_file_folder_path`) and takes the large inline
    initializers (weights a pass rewrote) as arrays over their bytes (`add_external_initializers`, which
    wants them declared external): no copy of either in the serialized model. None when the model has no
    lazy tensors (unless `inline`: then folder None, the inline ones handed over), or they sit in several
    folders that cannot be linked into one (`one_folder`)."""
    lazy = lazy_tensors(model)
    folder, names = one_folder(lazy)
    if folder is None and (lazy or not inline):
        return None
    relative, arrays = _relative(folder, names), {}
    initializers = list(model.graph.initializer)  # held: a wrapper's id is only stable while it lives
    handed = {id(t) for t in initializers if not is_lazy(t) and t.HasField("raw_data") and t.ByteSize() >= HAND_OVER_BYTES}

    def convert(tensor: onnx.TensorProto) -> onnx.TensorProto:
        if id(tensor) not in handed:  # a Constant's value cannot be handed over: it stays inline
            return relative(tensor)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
        arrays[tensor.name] = np.frombuffer(tensor.raw_data, dtype).reshape(tuple(int(d) for d in tensor.dims))
        out = onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims,
                               data_location=onnx.TensorProto.EXTERNAL)
        for key, value in (("location", IN_MEMORY), ("offset", "0"), ("length", str(arrays[tensor.name].nbytes))):
            out.external_data.add(key=key, value=value)
        return out

    return light_copy(model, convert=convert).SerializeToString(), folder, arrays


# -- onnx-graphsurgeon ------------------------------------------------------------------------------

class DiskValues(gs.ir.tensor.LazyValues):
    """The values of a tensor left on disk: read by `load` (onnx's reader refuses the absolute location),
    exported as the same reference (gs's exporter reuses a LazyValues' proto unread). Read a Constant's
    values with `values_of`: gs's `Constant.values` would keep them in memory."""

    def load(self):
        return read_array(self.tensor)


def attach(graph: gs.Graph) -> None:
    """gs.import_onnx made LazyValues of the weights on disk (onnx's reader would refuse them): DiskValues."""
    for tensor in graph.tensors().values():
        values = getattr(tensor, "_values", None)  # gs keeps a Constant's lazily read values there
        if type(values) is gs.ir.tensor.LazyValues and is_lazy(values.tensor):
            tensor._values = tensor._onnxslim_disk = DiskValues(values.tensor)
            # gs stamps this on a Constant whose values a pass loaded: it would export raw data marked external
            tensor.data_location = None


def is_on_disk(tensor) -> bool:
    """Whether a gs tensor is a Constant whose values are on disk (or were, before a pass read them)."""
    return isinstance(getattr(tensor, "_values", None), DiskValues) or getattr(tensor, "_onnxslim_disk", None) is not None


def values_of(constant: gs.Constant) -> np.ndarray:
    """A Constant's values; a weight on disk is read, not kept in the Constant (gs's `values` keeps it)."""
    if isinstance(constant._values, DiskValues):
        return constant._values.load()
    return constant.values


def disk_constant(name: str, array: np.ndarray) -> gs.Constant:
    """A Constant of a weight a pass computed from one on disk: written to disk (`spill`) when large."""
    if not spillable(array):
        return gs.Constant(name, array)
    constant = gs.Constant(name, DiskValues(spill(name, array)))
    constant._onnxslim_disk = constant._values
    return constant


def spill_computed(graph: gs.Graph) -> None:
    """In a graph whose weights are on disk, the large arrays the passes computed (folded, fused, repaired
    weights) go to disk before the export, one at a time, rather than being held as arrays and again as the
    exported protos' bytes. A graph with no weight on disk is left as it is."""
    constants = [t for t in graph.tensors().values() if isinstance(t, gs.Constant)]
    if not any(is_on_disk(t) for t in constants):
        return
    for tensor in constants:
        values = tensor._values
        if spillable(values) and getattr(tensor, "_export_dtype", None) in (None, values.dtype):
            tensor._values = tensor._onnxslim_disk = DiskValues(spill(tensor.name, values))
            tensor.data_location = None


def back_on_disk(graph: gs.Graph) -> None:
    """A weight a pass read (gs keeps the array in the Constant) but left as it was goes back to its reference
    on disk, so the export neither copies it nor holds it in memory (compared chunk by chunk with the file)."""
    for tensor in graph.tensors().values():
        disk = getattr(tensor, "_onnxslim_disk", None)
        if disk is not None and isinstance(tensor._values, np.ndarray) and same_values(disk.tensor, tensor._values):
            tensor._values = disk
