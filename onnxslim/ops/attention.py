"""The channel rule of the ONNX `Attention` op (opset 23): heads, and KV groups under grouped-query attention.

3-D form: Q [B, S, Hq*D], K [B, S, Hkv*D], V [B, S, Hkv*Dv] -> Y [B, S, Hq*Dv], head counts in the
`q_num_heads` / `kv_num_heads` attributes. 4-D form: Q [B, Hq, S, D], K/V [B, Hkv, S, D] -> Y [B, Hq, S, Dv].
With Hq = r * Hkv (grouped-query attention, r query heads share one KV head) the removal unit is a KV group:
KV head g with its r query heads; with r = 1 it is one head. Removing a unit is exact (the pruning oracle):
heads never mix inside the op, so dropping a group's slices of Q, K, V and Y equals zeroing the output
projection's input features of its query heads. Every position of a unit is tied to one anchor position of
K (the first of its KV head), so a unit is one class. After pruning, the head-count attributes are rewritten.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .helpers import Builder, Frozen, present


def _check_supported(node: gs.Node) -> None:
    if present(node, 4) or present(node, 5):
        raise Frozen("Attention with a KV cache (past_key/past_value)")
    if any(out.outputs for out in node.outputs[1:]):
        raise Frozen("Attention's present_key/present_value/qk_matmul_output are used")


def _mask_broadcasts(node: gs.Node) -> None:
    """An attn_mask with a head axis of its own would have to be sliced per head: not taken."""
    if not present(node, 3):
        return
    shape = node.inputs[3].shape
    if shape is None:
        raise Frozen("attn_mask of unknown shape")
    if len(shape) >= 3 and shape[-3] != 1:
        raise Frozen("attn_mask has a head axis")


def attention(b: Builder, node: gs.Node, tensor, axis: int) -> None:
    _check_supported(node)
    _mask_broadcasts(node)
    q, k, v, y = node.inputs[0], node.inputs[1], node.inputs[2], node.outputs[0]
    rank = len(q.shape or ())
    channel_axis = 2 if rank == 3 else 1
    if rank not in (3, 4) or axis != channel_axis:
        raise Frozen("not the head axis of Attention")
    qs, ks, vs, ys = (b.act(t, channel_axis) for t in (q, k, v, y))
    if rank == 3:
        hq, hkv = int(node.attrs.get("q_num_heads", 0)), int(node.attrs.get("kv_num_heads", 0))
        if hq <= 0 or hkv <= 0 or hq % hkv or qs.size % hq or ks.size % hkv or vs.size % hkv:
            raise Frozen("Attention head counts do not divide the widths")
        dq, dk, dv = qs.size // hq, ks.size // hkv, vs.size // hkv
    else:
        hq, hkv = qs.size, ks.size
        if hq % hkv or vs.size != hkv or ys.size != hq:
            raise Frozen("Attention head counts do not match")
        dq = dk = dv = 1
    r = hq // hkv
    anchor = lambda group: group * dk  # noqa: E731 - first position of the KV head in K
    b.link(ks, ks, np.arange(ks.size), anchor(np.arange(ks.size) // dk))
    b.link(qs, ks, np.arange(qs.size), anchor(np.arange(qs.size) // dq // r))
    b.link(vs, ks, np.arange(vs.size), anchor(np.arange(vs.size) // dv))
    b.link(ys, ks, np.arange(ys.size), anchor(np.arange(ys.size) // dv // r))
    if rank == 3:
        def fix(keep, node=node, ks=ks, dk=dk, r=r):
            if ks.id in keep:
                groups = len(keep[ks.id]) // dk
                node.attrs["kv_num_heads"] = groups
                node.attrs["q_num_heads"] = groups * r
        b.on_rewrite(node, fix)
