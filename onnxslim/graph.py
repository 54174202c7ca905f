"""Model I/O (external data, atomic writes, >2 GB), shape inference and small helpers over onnx-graphsurgeon.

gs.Graph is the IR the passes edit; onnx.ModelProto is what moves between passes.
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import onnx
import onnx_graphsurgeon as gs
from google.protobuf.message import DecodeError

from . import check, external, ondisk, sparse
from .errors import SlimError
from .light import copy_fields, dataless_tensor, is_repeated as _is_repeated, light_copy

TWO_GB = 2**31 - 1  # protobuf's hard limit on one serialized message


def load_model(path: str | os.PathLike, *, lazy: bool = False) -> onnx.ModelProto:
    """Load a model with its external data, refusing anything that is not a readable ONNX model.

    lazy: large external tensors stay on disk as checked references (onnxslim.ondisk), not read."""
    path = Path(path)
    if not path.exists():
        raise SlimError(f"{path}: no such file")
    if path.is_dir():
        raise SlimError(f"{path}: is a folder, not an ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeWarning, ValueError, UnicodeDecodeError) as err:
        raise SlimError(f"{path}: not an ONNX model or the file is corrupt ({type(err).__name__})") from None
    except Exception as err:  # protobuf raises several private error types on truncated files
        raise SlimError(f"{path}: cannot be parsed as ONNX ({type(err).__name__}: {err})") from None
    if not model.graph.node and not model.graph.output:
        raise SlimError(f"{path}: not an ONNX model (no graph found)")
    bad_string = _invalid_string_field(model)
    if bad_string:
        raise SlimError(f"{path}: the file is corrupt (field {bad_string} is not valid UTF-8)")
    _load_external_data(model, path.parent, lazy)
    check.check_tensors(model)  # before anything sizes or copies a tensor by its dims
    try:
        ondisk.check_onnx(model) if fits_protobuf(model) else None  # weights on disk count for nothing here
    except Exception as err:  # ValidationError, or a UnicodeDecodeError of its message on corrupt files
        first = str(err).strip().splitlines()[0] if str(err).strip() else "invalid model"
        raise SlimError(f"{path}: invalid ONNX model: {first}") from None
    sparse.densify(model)  # onnx-graphsurgeon and onnxruntime both want them dense
    check.check_nodes(model)
    check.warn_values(model)
    return model



def _invalid_string_field(message) -> str | None:
    """The first string field holding bytes that are not UTF-8 (proto2 does not check on parse; such a
    name reaches Python as `bytes` and breaks every later step), else None."""
    if isinstance(message, onnx.TensorProto):  # ListFields would copy raw_data, possibly gigabytes
        texts = [message.name, message.doc_string, *(v for e in message.external_data for v in (e.key, e.value))]
        return "onnx.TensorProto.name" if any(isinstance(t, bytes) for t in texts) else None
    for field, value in message.ListFields():
        if field.type == field.TYPE_MESSAGE:
            for item in (value if _is_repeated(field) else (value,)):
                found = _invalid_string_field(item)
                if found:
                    return found
        elif field.type == field.TYPE_STRING:
            if any(isinstance(v, bytes) for v in (value if _is_repeated(field) else (value,))):
                return field.full_name
    return None


def _external_tensors(model: onnx.ModelProto):
    return external.external_tensors(model)


def _load_external_data(model: onnx.ModelProto, base_dir: Path, lazy: bool) -> None:
    # the wrappers are held in `kept`: an id is only stable while its protobuf wrapper lives
    kept = [t for t in ondisk.main_tensors(model) if ondisk.stays_on_disk(t, _dims_bytes)] if lazy else []
    external.load_external_data(model, base_dir, _dims_bytes, {id(t) for t in kept})


def save_model(model: onnx.ModelProto, path: str | os.PathLike, *, input_path: str | os.PathLike | None = None,
               external_data: bool = False) -> None:
    """Write atomically (temp file + rename); models over 2 GB, or any with `external_data`, get their
    weights (tensors of 1 KB and more) in `<name>.data` beside them.

    On any failure nothing is left behind: no temp file, and an existing output is kept as it was."""
    path = Path(path)
    if input_path is not None and _same_file(path, Path(input_path)):
        raise SlimError(f"output {path} is the input model; refusing to overwrite it")
    if path.is_dir():
        raise SlimError(f"output {path} is a folder; give a file name")
    large = external_data or (not fits_protobuf(model) if _all_inline(model) else True)
    data_path = path.parent / (path.name + ".data")
    targets = [path] + ([data_path] if large else [])
    if input_path is not None and any(t.exists() for t in targets):
        for data in model_files(input_path)[1:]:
            for target in targets:
                if _same_file(target, data):
                    raise SlimError(f"output {target} holds the input model's external data; refusing to overwrite it")
    temps: list[str] = []
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _temp_file(path.parent, f".{path.name}.", temps)
        if large:
            data_name = path.name + ".data"
            tmp_data = _temp_file(path.parent, f".{data_name}.", temps)
            # weights stream to the data file one tensor at a time; the proto written is a light copy
            # naming the data file by its final name (no copy of the whole model in memory)
            with open(tmp_data, "wb") as fh:
                light = light_copy(model, convert=ExternalWriter(fh, data_name))
            with open(tmp, "wb") as fh:
                fh.write(light.SerializeToString())
            _replace_pair(tmp_data, path.parent / data_name, tmp, path, temps)
        else:
            with open(tmp, "wb") as fh:
                fh.write(model.SerializeToString())
            os.replace(tmp, path)
    except OSError as err:
        _remove(temps)
        raise SlimError(f"cannot write {path}: {err.strerror or err}; nothing written") from None
    except BaseException:
        _remove(temps)
        raise


def _replace_pair(tmp_data: str, data: Path, tmp_model: str, model: Path, temps: list[str]) -> None:
    """Two renames, data first: the model file is the commit point. Until it lands, an existing output keeps
    its own data (a hard link keeps it and is put back if anything, an interrupt too, stops us in between),
    and a new output leaves no data file without its model."""
    backup = None
    if data.exists():
        backup = _temp_name(data.parent, f".{data.name}.old.", temps)
        os.link(data, backup)
    os.replace(tmp_data, data)
    try:
        os.replace(tmp_model, model)
    except BaseException:
        if backup:
            os.replace(backup, data)
        else:
            data.unlink(missing_ok=True)
        raise
    if backup:
        os.unlink(backup)


def _temp_name(folder: Path, prefix: str, temps: list[str]) -> str:
    """A fresh unused name (for a hard link) that the failure path removes."""
    name = _temp_file(folder, prefix, temps)
    os.unlink(name)
    return name


class ExternalWriter:
    """Appends a tensor's raw bytes to an open data file (4 KB aligned, so runtimes may map them) and
    returns a data-less copy that points there; small tensors and non-raw encodings stay inline."""

    ALIGN = 4096

    def __init__(self, fh, location: str, min_bytes: int = 1024):
        self.fh, self.location, self.min_bytes = fh, location, min_bytes

    def __call__(self, tensor: onnx.TensorProto) -> onnx.TensorProto:
        lazy = ondisk.is_lazy(tensor)
        if not lazy and (tensor.data_location == onnx.TensorProto.EXTERNAL or not tensor.HasField("raw_data")
                         or _data_bytes(tensor) < self.min_bytes):
            return tensor
        self.fh.write(b"\0" * (-self.fh.tell() % self.ALIGN))
        offset = self.fh.tell()
        if lazy:  # file to file, a chunk at a time
            length = ondisk.copy_into(tensor, self.fh)
        else:
            data = tensor.raw_data
            self.fh.write(data)
            length = len(data)
        out = onnx.TensorProto()
        out.name, out.data_type, out.doc_string = tensor.name, tensor.data_type, tensor.doc_string
        out.dims.extend(tensor.dims)
        out.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", self.location), ("offset", str(offset)), ("length", str(length))):
            out.external_data.add(key=key, value=value)
        return out


def _temp_file(folder: Path, prefix: str, temps: list[str]) -> str:
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
    temps.append(name)
    os.close(fd)
    # mkstemp creates 0600; the output should get the permissions of any file the user creates
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)
    return name


def _remove(names: list[str]) -> None:
    for name in names:
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass


def model_files(path: str | os.PathLike) -> list[Path]:
    """The model file, then the external data files it names: what an output must never replace. Reads the
    proto without its data (a whole parse when the weights are inline)."""
    path = Path(path)
    files = [path]
    try:
        proto = onnx.load(str(path), load_external_data=False)
        for tensor in _external_tensors(proto):
            location = external.location_of(tensor)
            if isinstance(location, str) and location and "\0" not in location and path.parent / location not in files:
                files.append(path.parent / location)
    except Exception:  # not readable as ONNX: load_model says why
        pass
    return files


def _all_inline(model: onnx.ModelProto) -> bool:
    return not any(True for _ in _external_tensors(model))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


EXACT_SIZE_LIMIT = TWO_GB  # below this, model_bytes is exact (_exact_size); above, an estimate


def model_bytes(model: onnx.ModelProto) -> int:
    """Serialized size: weights plus graph, the weights left on disk (onnxslim.ondisk) included.

    upb's ByteSize() encodes the whole message to measure it (a transient copy of every weight: peak memory
    measured at 3x the model, and 0.2-1 s on a 50-170 MB model), and refuses past 2 GB. So the size is
    computed from the initializers' dims and the framing of their data (_exact_size), and past 2 GB estimated
    from a copy without the large tensors' data (a few bytes of framing per tensor short)."""
    estimate, dropped = _size_without_large_data(model)
    if estimate < EXACT_SIZE_LIMIT:  # (sizes an initializer on disk as if inline; a Constant's value adds its data)
        on_disk = sum(ondisk.lazy_bytes(t) for t in model.graph.initializer if ondisk.is_lazy(t))
        return _exact_size(model) + ondisk.disk_bytes(model) - on_disk
    return estimate + 8 * dropped + ondisk.disk_bytes(model)


def _varint_len(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def _field_len(payload: int) -> int:
    """A length-delimited field with a one-byte tag: tag, length, payload."""
    return 1 + _varint_len(payload) + payload


def _exact_size(model: onnx.ModelProto) -> int:
    """model.ByteSize() without encoding the raw data of the initializers (upb encodes a message to size
    it): the model without its initializers, plus each initializer sized without its raw_data (whose length
    its dims give) and that field's framing. The tags involved (graph 7, initializer 5, raw_data 9) are one
    byte each."""
    rest = onnx.ModelProto()
    copy_fields(model, rest, skip="graph")
    copy_fields(model.graph, rest.graph, skip="initializer")
    graph = rest.graph.ByteSize()
    for tensor in model.graph.initializer:
        lazy = ondisk.is_lazy(tensor)
        raw = ondisk.lazy_bytes(tensor) if lazy else _dims_bytes(tensor) if tensor.HasField("raw_data") else None
        if raw is None:
            graph += _field_len(tensor.ByteSize())
            continue
        header = onnx.TensorProto()
        copy_fields(tensor, header, skip="raw_data", skip_also="external_data" if lazy else "")
        if lazy:
            header.ClearField("data_location")
        graph += _field_len(header.ByteSize() + _field_len(raw))
    return rest.ByteSize() - _field_len(rest.graph.ByteSize()) + _field_len(graph)


# framing a tensor's data adds when it is put back: the data field's tag and length (<= 6 bytes), and the
# length prefixes of the messages that hold the tensor growing by up to 4 bytes each (attribute, node, graph)
_FRAMING_BOUND = 6 + 4 * 4


def fits_protobuf(model: onnx.ModelProto) -> bool:
    """Whether the model serializes under protobuf's 2 GB limit. An upper bound of its size from a copy
    without its large tensors' data: the exact size (model_bytes) costs an encoding of every weight, and
    this is asked on every load, save and check."""
    return size_upper_bound(model) < TWO_GB


def size_upper_bound(model: onnx.ModelProto) -> int:
    """At least the serialized size, within a few bytes a large tensor (no encoding of the weights)."""
    estimate, dropped = _size_without_large_data(model)
    return estimate + _FRAMING_BOUND * (dropped + 1)


def _size_without_large_data(model: onnx.ModelProto) -> tuple[int, int]:
    """(size of the model without its large tensors' data + those data sizes, number of tensors dropped)."""
    data = []

    def drop(tensor):
        light = dataless_tensor(tensor)
        if light is not tensor:
            data.append(_data_bytes(tensor))
        return light

    return light_copy(model, convert=drop).ByteSize() + sum(data), len(data)


def _data_bytes(tensor: onnx.TensorProto) -> int:
    """Bytes of a tensor's data held in the proto, without reading it (reading raw_data copies it)."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        return 0
    varints = len(tensor.int32_data) + len(tensor.int64_data) + len(tensor.uint64_data)
    if varints:  # varint-encoded: up to 10 bytes a value (a negative int32 is sign-extended)
        return 10 * varints
    size = _dims_bytes(tensor)
    return tensor.ByteSize() if size is None else size


def _dims_bytes(tensor: onnx.TensorProto) -> int | None:
    """Bytes its dims and element type call for; None for strings and types numpy cannot size."""
    if tensor.data_type == onnx.TensorProto.STRING:
        return None
    count = math.prod(int(d) for d in tensor.dims)  # Python ints: lying dims must not wrap around
    bits = _PACKED_BITS.get(tensor.data_type)
    if bits:
        return -(-count * bits // 8)
    try:
        return count * onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except Exception:
        return None


# element types stored packed, several to a byte (numpy's itemsize says 1)
_PACKED_BITS = {getattr(onnx.TensorProto, name): bits for name, bits in
                (("UINT4", 4), ("INT4", 4), ("FLOAT4E2M1", 4), ("UINT2", 2), ("INT2", 2),
                 ("FLOAT6E2M3", 6), ("FLOAT6E3M2", 6)) if hasattr(onnx.TensorProto, name)}


def infer_shapes(model: onnx.ModelProto, *, inplace: bool = False) -> onnx.ModelProto:
    """onnx shape inference run on a weightless copy (fast, works past 2 GB); the inferred value_info is
    written into the model (a copy of it unless `inplace`)."""
    light = light_copy(model)
    light.graph.ClearField("value_info")
    try:
        inferred = onnx.shape_inference.infer_shapes(light, data_prop=True)
    except Exception:
        try:
            inferred = onnx.shape_inference.infer_shapes(light)
        except Exception:
            inferred = light
    if not inplace:
        result = onnx.ModelProto()
        result.CopyFrom(model)
        model = result
    model.graph.ClearField("value_info")
    model.graph.value_info.extend(inferred.graph.value_info)
    known = {o.name: o for o in inferred.graph.output}
    for out in model.graph.output:
        if out.name in known and known[out.name].type.tensor_type.HasField("shape"):
            out.type.CopyFrom(known[out.name].type)
    return model


def to_graph(model: onnx.ModelProto) -> gs.Graph:
    graph = gs.import_onnx(model)
    ondisk.attach(graph)  # its weights on disk become DiskValues
    return graph


def to_model(graph: gs.Graph, like: onnx.ModelProto | None = None) -> onnx.ModelProto:
    """Export a gs.Graph, keeping the original's opset imports and metadata."""
    graph.cleanup().toposort()
    ondisk.back_on_disk(graph)
    ondisk.spill_computed(graph)
    model = gs.export_onnx(graph, do_type_check=False)
    if like is not None:
        del model.opset_import[:]
        model.opset_import.extend(like.opset_import)
        # before IR 4 every initializer also had to be a graph input; gs exports them apart, legal from IR 4
        model.ir_version = max(like.ir_version, 4)
        model.producer_name = like.producer_name or model.producer_name
        del model.metadata_props[:]
        model.metadata_props.extend(like.metadata_props)
    return model


def clear_intermediate_shapes(graph: gs.Graph) -> None:
    """Forget inferred shapes of inner tensors so a later inference recomputes them after a rewrite."""
    keep = {t.name for t in graph.inputs} | {t.name for t in graph.outputs}
    for name, tensor in graph.tensors().items():
        if isinstance(tensor, gs.Variable) and name not in keep:
            tensor.shape = None
