"""Weight tying: constants with the same dtype, shape and bytes become one tensor (one initializer).

Weights of the layers later passes rewrite per node (Conv, ConvTranspose, Gemm, MatMul weight and bias,
BatchNormalization parameters) are left untied: pruning, low-rank and equalization replace or edit a
layer's weight in place, and a tied copy would change another layer with it."""
from __future__ import annotations

import hashlib

import numpy as np
import onnx_graphsurgeon as gs

from ..engine import Rule
from ..util import const

LAYER_SLOTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (0, 1, 2), "MatMul": (0, 1),
               "BatchNormalization": (1, 2, 3, 4)}


def _key(c: gs.Constant):
    v = const(c)  # not ascontiguousarray: it turns a scalar into shape (1,)
    return str(v.dtype), v.shape, hashlib.sha1(v.tobytes()).hexdigest()


class WeightTying(Rule, name="weight_tying"):
    def apply(self, ctx) -> int:
        outputs = ctx.output_ids()
        keep: dict = {}
        tied = 0
        for node in ctx.graph.nodes:
            slots = LAYER_SLOTS.get(node.op, ())
            for i, t in enumerate(node.inputs):
                if not isinstance(t, gs.Constant) or i in slots or id(t) in outputs:
                    continue
                if isinstance(t, gs.Constant) and t.values.dtype == object:
                    continue  # strings: hashing bytes is meaningless
                first = keep.setdefault(_key(t), t)
                if first is not t:
                    node.inputs[i] = first
                    tied += 1
        return tied
