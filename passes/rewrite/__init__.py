"""Lossless rewrite rules over onnx-graphsurgeon graphs (see engine.py for the rule protocol).

Adding a rule: one module in rules/ with a Rule subclass, and one line in RULES below."""
from __future__ import annotations

import onnx_graphsurgeon as gs

from .engine import RewriteContext, Rule, run_rules
from .rules.cast import CastChain, CastNoop
from .rules.concat import ConcatFlatten, ConcatSingle
from .rules.concat_reassemble import ConcatReassemble
from .rules.conv_add import ConvAdd
from .rules.conv_mul import ConvMul
from .rules.convtranspose_bn import ConvTransposeBN
from .rules.cse import CommonSubexpression
from .rules.expand_noop import ExpandNoop
from .rules.gemm_fold import GemmAdd, GemmMul
from .rules.identity_ops import PadNoop, SplitSingle
from .rules.matmul_add import MatMulAdd
from .rules.neutral import NeutralElement
from .rules.pad_conv import PadConv
from .rules.reduce_unsqueeze import ReduceUnsqueeze
from .rules.reshape import ReshapeChain, ReshapeNoop
from .rules.reshape_copy_dim import ReshapeCopyDim
from .rules.reshape_infer_dim import ReshapeInferDim
from .rules.shape_static_read import ShapeStaticRead
from .rules.slice_chain import SliceChain
from .rules.slice_noop import SliceNoop
from .rules.squeeze import SqueezeChain, UnsqueezeChain, UnsqueezeSqueeze
from .rules.transpose import TransposeAsReshape, TransposeIdentity, TransposePair
from .rules.weight_tying import WeightTying

# Order matters only for which of two overlapping rewrites happens first; every rule runs each round.
RULES: list[Rule] = [
    WeightTying(),
    CommonSubexpression(),
    ShapeStaticRead(),
    NeutralElement(),
    CastNoop(),
    CastChain(),
    ExpandNoop(),
    SliceNoop(),
    SliceChain(),
    PadNoop(),
    SplitSingle(),
    ConcatSingle(),
    ConcatFlatten(),
    ConcatReassemble(),
    ReshapeNoop(),
    ReshapeChain(),
    ReshapeInferDim(),
    ReshapeCopyDim(),
    TransposeIdentity(),
    TransposePair(),
    TransposeAsReshape(),
    UnsqueezeSqueeze(),
    UnsqueezeChain(),
    SqueezeChain(),
    ReduceUnsqueeze(),
    PadConv(),
    ConvMul(),
    ConvAdd(),
    ConvTransposeBN(),
    MatMulAdd(),
    GemmMul(),
    GemmAdd(),
]


def apply_rules(graph: gs.Graph, skip: set[str] | frozenset = frozenset(), opset: int | None = None,
                reasons: list | None = None) -> dict[str, int]:
    """Apply RULES (minus those named in `skip`) to a fixpoint; the graph is edited in place and left
    cleaned up and topologically sorted. Returns {rule name: times fired} (rules that never fired omitted).
    `reasons`, when given, receives (rule, node, why it did not apply) tuples."""
    ctx = RewriteContext(graph, int(getattr(graph, "opset", None) or 0) if opset is None else opset)
    counts = run_rules(ctx, [r for r in RULES if r.name not in skip])
    if reasons is not None:
        reasons.extend(ctx.reasons)
    return counts


__all__ = ["RULES", "Rule", "RewriteContext", "apply_rules"]
