"""Attention-aware output metric for the Q and K projections of a self-attention block.

A Q projection's output only matters through the attention logits s_ts = q_t . k_s (per head), and a
softmax over s ignores anything constant over s. An error dq_t changes the logits by dq_t . (k_s - mean k),
so its expected squared logit error is dq^T M_Q dq with M_Q the covariance of k, block-diagonal over heads
(heads never mix). Likewise an error dk_s costs dk^T M_K dk with M_K = E[q q^T] per head. Fitting the
projection in that metric (data-aware SVD of S W with S = M^(1/2), mapped back) minimizes the logit error
instead of the plain output error, at the same rank.

Pairs are found in the graph: a MatMul of two activations whose operands trace back, through Reshape /
Transpose / Identity / (Un)Squeeze and Add / Mul / Div with a constant, to two candidate layers. The head
layout is read from one calibration batch (the operand must equal the layer's output reshaped to heads and
transposed, up to a scale); a pair whose layout does not check out is left to the plain metric.
"""
from __future__ import annotations

import numpy as np
import onnx

from onnxslim.runtime import TensorTap

from .factor import OutputStats
from .layers import Layer

_THROUGH = {"Transpose", "Reshape", "Identity", "Squeeze", "Unsqueeze"}
_CONST_OPERAND = {"Add", "Sub", "Mul", "Div"}
METRIC_RIDGE = 1e-3  # x mean eigenvalue added to M: directions the other side never sees still cost a little


def find_pairs(model: onnx.ModelProto, layers: list[Layer]) -> list[tuple[Layer, Layer, onnx.NodeProto]]:
    """(Q layer, K layer, the MatMul computing the logits) for every attention product found."""
    consts = {t.name for t in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    producer = {o: n for n in model.graph.node for o in n.output}
    by_tensor = {}
    for layer in layers:
        if layer.kind == "conv":
            continue
        by_tensor[layer.out_tensor] = layer
        if layer.bias_add is not None:
            by_tensor[layer.bias_add.output[0]] = layer

    def trace(name):
        for _ in range(12):
            if name in by_tensor:
                return by_tensor[name]
            node = producer.get(name)
            if node is None:
                return None
            if node.op_type in _THROUGH:
                name = node.input[0]
            elif node.op_type in _CONST_OPERAND and len(node.input) == 2:
                live = [i for i in node.input if i not in consts]
                if len(live) != 1 or (node.op_type in ("Sub", "Div") and live[0] != node.input[0]):
                    return None
                name = live[0]
            else:
                return None
        return None

    pairs = []
    for node in model.graph.node:
        if node.op_type != "MatMul" or any(i in consts for i in node.input):
            continue
        q, k = trace(node.input[0]), trace(node.input[1])
        if q is not None and k is not None and q is not k:
            pairs.append((q, k, node))
    return pairs


def _actual(layer: Layer, value: np.ndarray) -> np.ndarray:
    """The layer's output including a MatMul's bias (the tapped tensor is pre-bias for a MatMul)."""
    if layer.kind == "matmul" and layer.bias is not None:
        return value + layer.bias
    return value


def _proportional(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    scale = float(np.sum(a * b)) / max(float(np.sum(b * b)), 1e-30)
    return float(np.linalg.norm(a - scale * b)) <= 1e-3 * max(float(np.linalg.norm(a)), 1e-30)


def head_layouts(model: onnx.ModelProto, pairs, feed: dict) -> list[tuple[Layer, Layer, int]]:
    """(Q, K, heads) for the pairs whose operands are the layers' outputs split into contiguous heads."""
    if not pairs:
        return []
    names = [n for q, k, node in pairs for n in (q.out_tensor, k.out_tensor, node.input[0], node.input[1])]
    values = TensorTap(model, names, hand_over=True)(feed)
    out = []
    for q, k, node in pairs:
        a, b = values[node.input[0]], values[node.input[1]]
        yq, yk = _actual(q, values[q.out_tensor]), _actual(k, values[k.out_tensor])
        if a.ndim != 4 or b.ndim != 4 or yq.ndim != 3 or yk.ndim != 3:
            continue
        batch, heads, tokens, dim = a.shape
        if heads * dim != q.out_features or q.out_features != k.out_features:
            continue
        qh = yq.reshape(batch, tokens, heads, dim).transpose(0, 2, 1, 3)
        kh = yk.reshape(yk.shape[0], yk.shape[1], heads, dim).transpose(0, 2, 3, 1)
        if _proportional(a, qh) and _proportional(b, kh):
            out.append((q, k, heads))
    return out


def _block_diagonal(m: np.ndarray, heads: int) -> np.ndarray:
    d = m.shape[0] // heads
    out = np.zeros_like(m)
    for h in range(heads):
        s = slice(h * d, (h + 1) * d)
        out[s, s] = m[s, s]
    return out


def _root(m: np.ndarray) -> np.ndarray:
    m = (m + m.T) / 2
    m = m + METRIC_RIDGE * max(np.trace(m) / m.shape[0], 1e-30) * np.eye(m.shape[0])
    vals, vecs = np.linalg.eigh(m)
    return (vecs * np.sqrt(np.maximum(vals, 0.0))) @ vecs.T


def attach_metrics(stats: dict[str, OutputStats], layouts) -> dict[str, str]:
    """Sets OutputStats.metric of every Q and K layer found; returns {layer: "query"/"key" of which pair}."""
    roles = {}
    for q, k, heads in layouts:
        sq, sk = stats.get(q.name), stats.get(k.name)
        if sq is None or sk is None or q.name in roles or k.name in roles:
            continue
        mean_q = sq.mean_y + (q.bias if q.bias is not None else 0.0)
        m_q = _block_diagonal(sk.cyy, heads)                        # centered covariance of k
        m_k = _block_diagonal(sq.cyy + np.outer(mean_q, mean_q) if q.bias is not None else sq.cyy, heads)
        sq.metric, sk.metric = _root(m_q), _root(m_k)
        roles[q.name], roles[k.name] = f"query (keys: {k.name})", f"key (queries: {q.name})"
    return roles
