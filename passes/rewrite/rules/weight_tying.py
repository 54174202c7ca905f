"""Weight tying: constants with the same dtype, shape and bytes become one tensor (one initializer).

Weights of the layers later passes rewrite per node (Conv, ConvTranspose, Gemm, MatMul weight and bias,
BatchNormalization parameters) are left untied: pruning, low-rank and equalization replace or edit a
layer's weight in place, and a tied copy would change another layer with it."""
from __future__ import annotations

import hashlib
from collections import Counter

import onnx_graphsurgeon as gs

from ..engine import Rule
from ..util import const

LAYER_SLOTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (0, 1, 2), "MatMul": (0, 1),
               "BatchNormalization": (1, 2, 3, 4)}


def _key(c: gs.Constant):
    v = const(c)  # not ascontiguousarray: it turns a scalar into shape (1,)
    return str(v.dtype), v.shape, hashlib.sha1(v.tobytes()).hexdigest()


def _shape_key(c: gs.Constant):
    return str(c.dtype), tuple(c.shape)  # gs reads both from the proto, not the data


class WeightTying(Rule, name="weight_tying"):
    def apply(self, ctx) -> int:
        outputs = ctx.output_ids()
        slots = [(node, i, t) for node in ctx.graph.nodes for i, t in enumerate(node.inputs)
                 if isinstance(t, gs.Constant) and i not in LAYER_SLOTS.get(node.op, ()) and id(t) not in outputs
                 and str(t.dtype) != "object"]  # strings: hashing bytes is meaningless
        # dtype and shape first (no read): only a constant that has a twin by those is read and hashed
        twins = Counter({id(t): _shape_key(t) for _, _, t in slots}.values())
        keep: dict = {}
        tied = 0
        for node, i, t in slots:
            if twins[_shape_key(t)] > 1:
                first = keep.setdefault(_key(t), t)
                if first is not t:
                    node.inputs[i] = first
                    tied += 1
        return tied
