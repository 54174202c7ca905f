"""MACs (multiply-accumulates) of the ops that dominate compute, from their input and output shapes; the op
registry (`onnxslim.ops`) names the counter of each op kind. A counter returns None when a shape it needs
is unknown (a symbolic dim), and the registry's 0 for every op without one."""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper


def static_shape(shape) -> tuple | None:
    if shape is None or any(d is None for d in shape):
        return None
    return shape


def elements(dims) -> int:
    return int(math.prod(int(d) for d in dims))


def attrs_of(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _shape_at(node, shapes, i):
    return shapes.get(node.input[i]) if len(node.input) > i and node.input[i] else None


def _out(node, shapes):
    return shapes.get(node.output[0]) if node.output else None


def conv_counter(x: int, w: int):
    """MACs of a Conv-like op whose activation is input `x` and weight input `w` (QLinearConv: 0 and 3)."""
    def count(node, shapes):
        return _conv_macs(attrs_of(node), _shape_at(node, shapes, x), _shape_at(node, shapes, w), _out(node, shapes))
    return count


def matmul_counter(a: int, b: int):
    """MACs of a MatMul-like op with operands at inputs `a` and `b` (QLinearMatMul: 0 and 3)."""
    def count(node, shapes):
        return _matmul_macs(_shape_at(node, shapes, a), _shape_at(node, shapes, b), _out(node, shapes))
    return count


def matmul_nbits_macs(node, shapes):
    """com.microsoft MatMulNBits (weight-only int4/int8): K x N per input row."""
    attrs, a = attrs_of(node), _shape_at(node, shapes, 0)
    a = static_shape(tuple(a)) if a is not None else None
    return int(np.prod(a[:-1], dtype=np.int64)) * int(attrs["K"]) * int(attrs["N"]) if a else None


def attention_macs(node, shapes):
    """ONNX Attention (opset 23): Q K^T and the weights times V for every query head,
    B * Hq * Sq * Skv * (D + Dv), with Skv including a past KV cache. Q, K, V in the 4-D form
    [B, heads, S, D] or the 3-D form [B, S, heads * D] with the head-count attributes."""
    attrs = attrs_of(node)
    q, k, v = (_shape_at(node, shapes, i) for i in range(3))
    past = _shape_at(node, shapes, 4)
    if any(s is None or static_shape(tuple(s)) is None for s in (q, k, v)) or (past is not None and static_shape(tuple(past)) is None):
        return None
    if len(q) == 4:
        batch, q_heads, q_seq, _ = q
    elif len(q) == 3 and attrs.get("q_num_heads"):
        batch, q_seq, _ = q
        q_heads = int(attrs["q_num_heads"])
    else:
        return None
    q_dim, kv_seq = q[-1] // (1 if len(q) == 4 else q_heads), k[-2]
    if len(v) == 4:
        v_dim = v[3]
    elif attrs.get("kv_num_heads"):
        v_dim = v[2] // int(attrs["kv_num_heads"])
    else:
        return None
    kv_seq += past[-2] if past is not None else 0
    return int(batch) * int(q_heads) * int(q_seq) * int(kv_seq) * (int(q_dim) + int(v_dim))


def conv_output_spatial(in_spatial, kernel, *, strides=None, pads=None, dilations=None, auto_pad="NOTSET") -> tuple:
    """Output spatial dims of Conv per the ONNX spec (pads are [begin..., end...])."""
    n = len(in_spatial)
    strides = strides or [1] * n
    dilations = dilations or [1] * n
    pads = pads or [0] * (2 * n)
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    out = []
    for i in range(n):
        span = dilations[i] * (kernel[i] - 1) + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out.append(-(-in_spatial[i] // strides[i]))
        elif auto_pad == "VALID":
            out.append((in_spatial[i] - span) // strides[i] + 1)
        else:
            out.append((in_spatial[i] + pads[i] + pads[i + n] - span) // strides[i] + 1)
    return tuple(out)


def _conv_macs(attrs, x, w, out) -> int | None:
    group = int(attrs.get("group", 1))
    kernel = static_shape(tuple(w[2:])) if w is not None and len(w) > 2 else None
    kernel = kernel or (tuple(attrs["kernel_shape"]) if "kernel_shape" in attrs else None)
    # input channels per group: the weight's axis 1, else the input's channels / group
    c_per_group = w[1] if w is not None and len(w) > 1 and w[1] is not None else None
    if c_per_group is None and x is not None and len(x) > 1 and x[1] is not None:
        c_per_group = x[1] // group
    if kernel is None or c_per_group is None:
        return None
    out = static_shape(out)
    if out is None:
        x_s, m = static_shape(x), (w[0] if w is not None else None)
        if x_s is None or m is None:
            return None
        spatial = conv_output_spatial(x_s[2:], kernel, strides=attrs.get("strides"), pads=attrs.get("pads"),
                                      dilations=attrs.get("dilations"), auto_pad=attrs.get("auto_pad", "NOTSET"))
        out = (x_s[0], m) + spatial
    return elements(out) * int(c_per_group) * elements(kernel)


def conv_transpose_macs(node, shapes) -> int | None:
    # every input element is multiplied by the (out_channels / group) x kernel weights of its channel
    x, w = static_shape(_shape_at(node, shapes, 0)), static_shape(_shape_at(node, shapes, 1))
    if x is None or w is None:
        return None
    return elements(x) * elements(w[1:])


def gemm_macs(node, shapes) -> int | None:
    attrs = attrs_of(node)
    a, b = static_shape(_shape_at(node, shapes, 0)), static_shape(_shape_at(node, shapes, 1))
    out = static_shape(_out(node, shapes))
    m = k = n = None
    if a is not None and len(a) == 2:
        m, k = (a[1], a[0]) if attrs.get("transA", 0) else a
    if b is not None and len(b) == 2:
        kb, n = (b[1], b[0]) if attrs.get("transB", 0) else b
        k = k if k is not None else kb
    if out is not None and len(out) == 2:
        m = m if m is not None else out[0]
        n = n if n is not None else out[1]
    if None in (m, k, n):
        return None
    return int(m) * int(k) * int(n)


def _matmul_macs(a, b, out) -> int | None:
    k = None
    if a is not None and len(a) >= 1 and a[-1] is not None:
        k = a[-1]
    elif b is not None and len(b) >= 1:
        k = b[-2] if len(b) >= 2 else b[0]
    out = static_shape(out)
    if out is None:
        a, b = static_shape(a), static_shape(b)
        if a is None or b is None:
            return None
        try:
            out = _matmul_shape(a, b)
        except ValueError:
            return None
    if k is None:
        return None
    return elements(out) * int(k)


def _matmul_shape(a, b) -> tuple:
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    batch = np.broadcast_shapes(a2[:-2], b2[:-2])
    shape = tuple(batch) + (a2[-2], b2[-1])
    if len(a) == 1:
        shape = shape[:-2] + shape[-1:]
    if len(b) == 1:
        shape = shape[:-1]
    return shape


def einsum_macs(node, shapes) -> int | None:
    """Product of the sizes of all labels: each output element sums over the contracted labels."""
    equation, shapes = attrs_of(node).get("equation", b""), [shapes.get(n) for n in node.input]
    if len(shapes) < 2:
        return 0
    eq = (equation.decode() if isinstance(equation, bytes) else equation).replace(" ", "")
    lhs = eq.split("->")[0].split(",")
    if len(lhs) != len(shapes) or any(static_shape(s) is None for s in shapes):
        return None
    sizes, ellipsis = {}, []
    for terms, shape in zip(lhs, shapes):
        labels = terms.replace("...", ".")
        if "." in labels:
            head, tail = labels.split(".")
            n_ell = len(shape) - len(head) - len(tail)
            ellipsis.append(tuple(shape[len(head):len(head) + n_ell]))
            dims = list(shape[:len(head)]) + list(shape[len(shape) - len(tail):]) if tail else list(shape[:len(head)])
            labels = head + tail
        else:
            dims = list(shape)
        if len(labels) != len(dims):
            return None
        for label, d in zip(labels, dims):
            sizes[label] = max(sizes.get(label, 1), int(d))
    try:
        ell = np.broadcast_shapes(*ellipsis) if ellipsis else ()
    except ValueError:
        return None
    return elements(sizes.values()) * elements(ell)
