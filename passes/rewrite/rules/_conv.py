"""What the Conv/ConvTranspose fusions share: the layer's constant weight and bias, the per-output-channel
vector a broadcast constant amounts to, and scaling a weight along its output channels."""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..util import NoMatch, const, dtype, only_consumer, producer

CONVS = ("Conv", "ConvTranspose")


def conv_producer(x, ctx) -> gs.Node:
    """The Conv/ConvTranspose producing x, with constant weight (and bias), when x feeds nothing else."""
    conv = producer(x, CONVS)
    if conv is None:
        raise NoMatch("input is not produced by a Conv or ConvTranspose")
    if not only_consumer(x, ctx):
        raise NoMatch("the conv output has other consumers or is a graph output")
    if const(conv.inputs[1]) is None:
        raise NoMatch("the conv weight is not constant")
    if len(conv.inputs) > 2 and conv.inputs[2].name and const(conv.inputs[2]) is None:
        raise NoMatch("the conv bias is not constant")
    if conv.inputs[1].values.dtype.kind != "f":
        raise NoMatch("the conv weight is not a float tensor")
    return conv


def out_channels(conv: gs.Node) -> int:
    w = conv.inputs[1].values
    return w.shape[0] if conv.op == "Conv" else w.shape[1] * int(conv.attrs.get("group", 1))


def channel_vector(c: np.ndarray, conv: gs.Node, x) -> np.ndarray:
    """c as a length-C vector when broadcasting c against the conv output ([N, C, spatial...]) is a
    per-channel operation that leaves the output shape unchanged."""
    r = conv.inputs[1].values.ndim
    channels = out_channels(conv)
    if c.dtype != conv.inputs[1].values.dtype or (dtype(x) is not None and c.dtype != dtype(x)):
        raise NoMatch("the constant's dtype differs from the conv's")
    if c.ndim > r:
        raise NoMatch("the constant has more dims than the conv output (broadcast would add dims)")
    shape = (1,) * (r - c.ndim) + c.shape
    if any(d != 1 for i, d in enumerate(shape) if i != 1) or shape[1] not in (1, channels):
        raise NoMatch(f"the constant of shape {c.shape} is not per output channel")
    if not np.all(np.isfinite(c)):
        raise NoMatch("the constant holds inf or nan")
    return np.broadcast_to(c.reshape(-1).astype(np.float64), (channels,))


def bias_of(conv: gs.Node) -> np.ndarray:
    if len(conv.inputs) > 2 and conv.inputs[2].name:
        return conv.inputs[2].values.astype(np.float64)
    return np.zeros(out_channels(conv))


def set_bias(conv: gs.Node, bias: np.ndarray, tag: str, ctx) -> None:
    dt = conv.inputs[1].values.dtype
    b = gs.Constant(ctx.fresh(f"{conv.name or 'conv'}_bias_{tag}"), bias.astype(dt))
    if len(conv.inputs) > 2:
        conv.inputs[2] = b
    else:
        conv.inputs.append(b)


def scale_weight(conv: gs.Node, scale: np.ndarray, tag: str, ctx) -> None:
    """W' such that conv(x, W') = conv(x, W) * scale[channel]."""
    w = conv.inputs[1].values.astype(np.float64)
    if conv.op == "Conv":
        w = w * scale.reshape(-1, *([1] * (w.ndim - 1)))
    else:  # ConvTranspose weight [Cin, Cout/g, k...]: output channel g_i * Cout/g + j
        g = int(conv.attrs.get("group", 1))
        per = w.shape[1]
        blocks = w.reshape(g, w.shape[0] // g, per, *w.shape[2:])
        w = (blocks * scale.reshape(g, 1, per, *([1] * (w.ndim - 2)))).reshape(w.shape)
    conv.inputs[1] = gs.Constant(ctx.fresh(f"{conv.inputs[1].name}_{tag}"), w.astype(conv.inputs[1].values.dtype))


def const_operand(node: gs.Node, commutative: bool):
    """(variable input, constant value) of a binary node, the constant second unless commutative."""
    a, b = node.inputs[0], node.inputs[1]
    if const(b) is not None and not isinstance(a, gs.Constant):
        return a, const(b)
    if commutative and const(a) is not None and not isinstance(b, gs.Constant):
        return b, const(a)
    return None, None


def conv_channel_constant(node: gs.Node, commutative: bool, ctx) -> tuple[gs.Node, np.ndarray]:
    """(conv, per-output-channel vector) when `node` combines a Conv's sole output with a per-channel
    constant; else NoMatch with the reason (the match conv_add and conv_mul share)."""
    x, c = const_operand(node, commutative=commutative)
    if x is None:
        raise NoMatch("no constant operand (or the constant first in a non-commutative op)")
    conv = conv_producer(x, ctx)
    return conv, channel_vector(c, conv, x)
