"""Channel rules of the contracting ops (Conv, ConvTranspose, Gemm, MatMul): their weights are the sources
and exits of channel groups."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from . import heads
from .helpers import EXIT, PARAM, SOURCE, Builder, Frozen, present, rank_of, same_tensor, shape_of


def _outputs(b: Builder, node, ys, source_axis: int) -> None:
    """The output channels `ys` are the weight's `source_axis` and the bias."""
    b.link(ys, b.const(node, 1, source_axis, SOURCE))
    if present(node, 2):
        b.link(ys, b.const(node, 2, 0, PARAM))


def _dense(b: Builder, node, tensor, exit_axis: int, source_axis: int) -> None:
    """An ungrouped Conv/ConvTranspose: the input channels contract the weight's `exit_axis`."""
    if same_tensor(tensor, node.inputs[0]):
        b.link(b.act(node.inputs[0], 1), b.const(node, 1, exit_axis, EXIT))
    else:
        _outputs(b, node, b.act(node.outputs[0], 1), source_axis)


def conv(b: Builder, node, tensor, axis):
    """Conv: weight axis 1 contracts the input channels (exit); weight axis 0 and bias make the output
    channels (source). With groups > 1 whole conv groups are kept or removed, tying input and output."""
    x, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
    if not isinstance(w, gs.Constant):
        raise Frozen("weight is not a constant")
    if axis != 1:
        raise Frozen("not the channel axis")
    group = int(node.attrs.get("group", 1))
    if group == 1:
        _dense(b, node, tensor, exit_axis=1, source_axis=0)
        return
    xs, ys = b.act(x, 1), b.act(y, 1)
    per_in, per_out = w.shape[1], w.shape[0] // group
    _outputs(b, node, ys, source_axis=0)
    anchor = lambda idx, per: (idx // per) * per_out  # noqa: E731 - first output channel of the conv group
    b.link(xs, ys, np.arange(xs.size), anchor(np.arange(xs.size), per_in))
    b.link(ys, ys, np.arange(ys.size), anchor(np.arange(ys.size), per_out))

    def fix(keep, node=node, ys=ys):
        if ys.id in keep:
            node.attrs["group"] = len(keep[ys.id]) // per_out
    b.on_rewrite(node, fix)


conv.seeds = lambda node: [(node.outputs[0], 1)] if isinstance(node.inputs[1], gs.Constant) else []


def conv_transpose(b: Builder, node, tensor, axis):
    """ConvTranspose weight is [Cin, Cout/g, k...]: axis 0 is the exit, axis 1 the source."""
    if not isinstance(node.inputs[1], gs.Constant):
        raise Frozen("weight is not a constant")
    if int(node.attrs.get("group", 1)) != 1:
        raise Frozen("grouped ConvTranspose")
    if axis != 1:
        raise Frozen("not the channel axis")
    if "output_shape" in node.attrs:
        raise Frozen("explicit output_shape")
    _dense(b, node, tensor, exit_axis=0, source_axis=1)


conv_transpose.seeds = lambda node: [(node.outputs[0], 1)] if isinstance(node.inputs[1], gs.Constant) and int(node.attrs.get("group", 1)) == 1 else []


def gemm(b: Builder, node, tensor, axis):
    a, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
    if not isinstance(w, gs.Constant):
        raise Frozen("B is not a constant")
    k_a = 0 if int(node.attrs.get("transA", 0)) else 1
    k_w = 1 if int(node.attrs.get("transB", 0)) else 0
    if same_tensor(tensor, a):
        if axis != k_a:
            raise Frozen("Gemm row axis")
        b.link(b.act(a, k_a), b.const(node, 1, k_w, EXIT))
        return
    if axis != 1:
        raise Frozen("Gemm row axis")
    ys = b.act(y, 1)
    b.link(ys, b.const(node, 1, 1 - k_w, SOURCE))
    if present(node, 2):
        c = node.inputs[2]
        shape = shape_of(c)
        if len(shape) and shape[-1] == ys.size and ys.size != 1:
            b.link(ys, b.const(node, 2, len(shape) - 1, PARAM) if isinstance(c, gs.Constant) else b.act(c, len(shape) - 1))
        elif len(shape) and shape[-1] != 1:
            raise Frozen("Gemm C does not broadcast over the output features")


gemm.seeds = lambda node: [(node.outputs[0], 1)] if isinstance(node.inputs[1], gs.Constant) else []


def matmul(b: Builder, node, tensor, axis):
    """x[..., K] @ W[K, N] with a constant W: K is an exit, N a source; leading axes pass through."""
    a, w, y = node.inputs[0], node.inputs[1], node.outputs[0]
    if not isinstance(a, gs.Constant) and not isinstance(w, gs.Constant):
        return heads.activation_matmul(b, node, tensor, axis)  # attention's scores and context
    if isinstance(a, gs.Constant) or not isinstance(w, gs.Constant) or len(w.shape) != 2:
        raise Frozen("MatMul without a constant 2-D right-hand weight")
    rank_a, rank_y = rank_of(a), rank_of(y)
    if rank_a < 2:
        raise Frozen("MatMul of a vector")
    if same_tensor(tensor, a):
        if axis == rank_a - 1:
            b.link(b.act(a, axis), b.const(node, 1, 0, EXIT))
        else:
            b.link(b.act(a, axis), b.act(y, axis + rank_y - rank_a))
        return
    if axis == rank_y - 1:
        b.link(b.act(y, axis), b.const(node, 1, 1, SOURCE))
    else:
        b.link(b.act(a, axis - (rank_y - rank_a)), b.act(y, axis))


matmul.seeds = lambda node: ([(node.outputs[0], -1)] if isinstance(node.inputs[1], gs.Constant)
                             and len(node.inputs[1].shape) == 2 and not isinstance(node.inputs[0], gs.Constant) else [])
