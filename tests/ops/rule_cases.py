"""What the op-rule tests share: a Conv -> op -> Conv sandwich and the hypothesis settings.

Each graph puts the op between a producing Conv/MatMul (source) and a consuming one (exit), so the op sits
inside a prunable group; every case is checked against the masking oracle (tests/oracle.py) with random
keep-sets.
"""
from __future__ import annotations

from hypothesis import settings, strategies as st

from oracle import GraphBuilder

C = 8
X = {"x": ["N", 3, 8, 8]}
seeds = st.integers(0, 2**31 - 1)
examples = settings(max_examples=8, deadline=None)


def sandwich(middle, *, cin=3, c=C, k=3, bn_keep=False):
    """x -> Conv(cin->c) -> middle(b, t) -> Conv(c->4) -> y."""
    def build(seed=0):
        b = GraphBuilder(seed)
        t = b.conv("x", cin, c, k=k)
        t = middle(b, t)
        y = b.conv(t, c, 4, k=1)
        return b.model(X, [y])
    return build


def se_block(seed=0):
    b = GraphBuilder(seed)
    t = b.op("Relu", [b.conv("x", 3, C, k=3)])
    s = b.op("GlobalAveragePool", [t])
    s = b.op("Relu", [b.conv(s, C, 4)])
    s = b.op("HardSigmoid", [b.conv(s, 4, C)])
    return b.model(X, [b.conv(b.op("Mul", [t, s]), C, 4)])
