"""Sparse initializers and Constant(sparse_value) made dense at load.

onnx-graphsurgeon drops both (a sparse initializer becomes a dangling input, a sparse Constant a Constant
with no data that onnxruntime refuses), and onnxruntime itself densifies sparse initializers when it loads a
model. The dense size comes from the sparse tensor's dims, so it is checked against the memory budget first.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import numpy_helper

from . import budget
from .errors import SlimError


def densify(model: onnx.ModelProto) -> None:
    _densify_graph(model.graph)
    for function in model.functions:
        _densify_nodes(function.node)


def _densify_graph(graph: onnx.GraphProto) -> None:
    for sparse in graph.sparse_initializer:
        graph.initializer.append(to_dense(sparse))
    graph.ClearField("sparse_initializer")
    _densify_nodes(graph.node)


def _densify_nodes(nodes) -> None:
    for node in nodes:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.name == "sparse_value":
                dense = to_dense(attr.sparse_tensor)
                attr.Clear()
                attr.name, attr.type = "value", onnx.AttributeProto.TENSOR
                attr.t.CopyFrom(dense)
            if attr.HasField("g"):
                _densify_graph(attr.g)
            for sub in attr.graphs:
                _densify_graph(sub)


def to_dense(sparse: onnx.SparseTensorProto) -> onnx.TensorProto:
    name = sparse.values.name
    values = numpy_helper.to_array(sparse.values).reshape(-1)
    dims = [int(d) for d in sparse.dims]
    size = math.prod(dims)
    budget.require(size * values.dtype.itemsize, f"sparse tensor '{name}' made dense ({dims})")
    indices = numpy_helper.to_array(sparse.indices).astype(np.int64) if sparse.indices.dims else np.zeros(0, np.int64)
    if indices.ndim == 2 and dims:  # coordinates [NNZ, rank] -> linear positions
        if indices.shape[1] != len(dims):
            raise SlimError(f"sparse tensor '{name}': indices of rank {indices.shape[1]} for dims {dims}")
        if len(indices) and ((indices < 0).any() or (indices >= np.array(dims)).any()):
            raise SlimError(f"sparse tensor '{name}': an index lies outside its dims {dims}")
        indices = np.ravel_multi_index(tuple(indices.T), dims) if len(indices) else indices[:, 0]
    indices = indices.reshape(-1)
    if len(indices) != len(values) or (len(indices) and (indices.min() < 0 or indices.max() >= size)):
        raise SlimError(f"sparse tensor '{name}': {len(indices)} indices (in 0..{size - 1}?) for {len(values)} values")
    dense = np.zeros(size, dtype=values.dtype)
    dense[indices] = values
    return numpy_helper.from_array(dense.reshape(dims), name)
