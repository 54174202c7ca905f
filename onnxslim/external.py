"""Every tensor a model holds, and its external data read from the model's folder only.

onnx's own walker (`external_data_helper._get_all_tensors`) misses sparse initializers, sparse Constant values
and the initializers of subgraphs inside function bodies; a tensor it misses keeps its external reference,
and onnxruntime, given the model as bytes, then resolves that reference against the current directory
(issue 15: `cwd_secret.bin` read from the CWD). So the walk here covers every place a TensorProto can sit.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import onnx

from .errors import SlimError


def all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Initializers, sparse initializers (values and indices), attribute tensors (Constant value,
    sparse_value, ...) of the main graph, its subgraphs (If/Loop/Scan) and function bodies, recursively."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        yield from _nodes_tensors(function.node)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    yield from _nodes_tensors(graph.node)


def _nodes_tensors(nodes) -> Iterator[onnx.TensorProto]:
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sparse in ([attr.sparse_tensor] if attr.HasField("sparse_tensor") else []) + list(attr.sparse_tensors):
                yield sparse.values
                yield sparse.indices
            if attr.HasField("g"):
                yield from _graph_tensors(attr.g)
            for sub in attr.graphs:
                yield from _graph_tensors(sub)


def external_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    for tensor in all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            yield tensor


def location_of(tensor: onnx.TensorProto) -> str:
    return next((e.value for e in tensor.external_data if e.key == "location"), "")


def resolve(base: Path, tensor: onnx.TensorProto) -> Path:
    """The file holding `tensor`'s data, which must be a regular file inside `base` (the model's folder,
    resolved). Symlinks are followed first, so a link pointing out of the folder is refused too."""
    location = location_of(tensor)
    if not location or "\0" in location:
        raise SlimError(f"external data of tensor '{tensor.name}' has an invalid location {location!r}")
    target = (base / location).resolve()
    # A model is untrusted input: its data may only come from beside it.
    if os.path.isabs(location) or base not in target.parents:
        raise SlimError(f"external data '{location}' of tensor '{tensor.name}' points outside the model's folder; refusing to read it")
    if not target.is_file():
        raise SlimError(f"external data file '{location}' of tensor '{tensor.name}' is missing")
    return target


def load_external_data(model: onnx.ModelProto, base_dir: Path, dims_bytes, keep=None) -> None:
    """Read every external tensor's bytes into the proto (`dims_bytes(tensor)` sizes a tensor without a
    `length` entry), refusing locations outside `base_dir` and ranges past the end of the file.

    `keep`: the tensors (by id) left on disk instead, as references to the resolved file with explicit
    offset and length, after the same checks (onnxslim.ondisk)."""
    base = Path(base_dir).resolve()
    keep = keep or set()
    for tensor in list(external_tensors(model)):
        target, offset, length = _checked_range(base, tensor, dims_bytes)
        if id(tensor) in keep and length is not None:
            del tensor.external_data[:]
            for key, value in (("location", str(target)), ("offset", str(offset)), ("length", str(length))):
                tensor.external_data.add(key=key, value=value)
            continue
        with open(target, "rb") as fh:
            fh.seek(offset)
            data = fh.read(length) if length is not None else fh.read()
        tensor.raw_data = data
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.DEFAULT


def _checked_range(base: Path, tensor: onnx.TensorProto, dims_bytes) -> tuple[Path, int, int | None]:
    target = resolve(base, tensor)
    info = {e.key: e.value for e in tensor.external_data}
    try:
        offset = int(info.get("offset") or 0)
        length = int(info["length"]) if info.get("length") else None
    except ValueError:
        raise SlimError(f"external data of tensor '{tensor.name}' has a non-integer offset or length") from None
    if length is None:  # the tensor's own size, not the rest of a maybe huge file
        length = dims_bytes(tensor)
    size = target.stat().st_size
    # checked before reading: a corrupt length must not make us allocate it
    if offset < 0 or (length is not None and (length < 0 or offset + length > size)) or offset > size:
        raise SlimError(f"external data file '{location_of(tensor)}' is truncated (tensor '{tensor.name}' needs bytes "
                        f"{offset}..{offset + (length or 0)}, the file has {size})")
    return target, offset, length
