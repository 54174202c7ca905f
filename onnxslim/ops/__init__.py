"""The op registry: everything the engine knows about an op kind, in one entry (as Torch-Pruning keeps one
pruner per op type).

An entry (`OpKind`) says:
- `channels`: how the op ties channel spaces (`rule(builder, node, tensor, axis)`, see channels.py); an op
  without one freezes the channels that reach it ("has no channel rule");
- `macs`: its multiply-accumulate counter `(node, shapes) -> int | None` (cost.py); none counts 0;
- `kernels`: the onnxruntime profile's kernel names its work appears under (its fused and NCHWc forms):
  the latency model (passes/prune/latency.py) maps those kernels' time back to this op's channels;
- `linear`: a linear layer `y = W x + b` when its weight is a constant (pruning's exits and repair,
  low-rank, quantization's equalization: onnxslim.linear reads the layers of these op types).

Adding an element-wise op is one name in UNARY or BINARY below, and a case in tests/ops/test_elementwise.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import macs as mac
from .elementwise import channel_preserving, elementwise, layer_norm, normalization, pad, resize, softmax
from . import heads
from .attention import attention
from .layers import conv, conv_transpose, gemm, matmul
from .layout import concat, reduce, reshape, slice_, split, squeeze, transpose, unsqueeze
from .helpers import BN_SCALE, PARAM

DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class OpKind:
    channels: Callable | None = None
    macs: Callable | None = None
    kernels: tuple = ()
    linear: bool = False
    domain: str = ""


OPS: dict[str, OpKind] = {}


def register(op_types, **entry) -> None:
    for op in [op_types] if isinstance(op_types, str) else op_types:
        OPS[op] = OpKind(**entry)


def kind_of(op_type: str, domain: str = "") -> OpKind | None:
    kind = OPS.get(op_type)
    if kind is None:
        return None
    same = (domain in DEFAULT_DOMAINS) if kind.domain in DEFAULT_DOMAINS else domain == kind.domain
    return kind if same else None


def channel_rules() -> dict[str, Callable]:
    """{op type: channel rule} of the standard ops that have one."""
    return {op: k.channels for op, k in OPS.items() if k.channels is not None and k.domain in DEFAULT_DOMAINS}


def node_macs(node, shapes: dict) -> int | None:
    """MACs of one onnx.NodeProto at `shapes` ({tensor: shape with None for unknown dims}); 0 for ops
    without a counter and for other domains' ops (com.microsoft fused ops, local functions)."""
    kind = kind_of(node.op_type, node.domain)
    return kind.macs(node, shapes) if kind is not None and kind.macs is not None else 0


def compute_ops() -> set[str]:
    """Op types whose kernels the latency model maps back to channels."""
    return {op for op, k in OPS.items() if k.kernels}


def compute_kernels() -> set[str]:
    """Every kernel name of the profile that does those ops' work (fused and NCHWc forms included)."""
    return {name for k in OPS.values() for name in k.kernels}


def linear_ops() -> set[str]:
    return {op for op, k in OPS.items() if k.linear}


UNARY = ["Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Erf", "Gelu", "Softplus", "Softsign",
         "Elu", "Selu", "Celu", "ThresholdedRelu", "Mish", "Exp", "Log", "Sqrt", "Abs", "Neg", "Reciprocal",
         "Floor", "Ceil", "Round", "Sign", "Sin", "Cos", "Identity", "Cast", "Dropout", "Clip", "Swish", "Shrink"]
BINARY = ["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu"]
POOLS = ["MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"]
REDUCTIONS = ["ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL1", "ReduceL2", "ReduceProd",
              "ReduceLogSumExp", "ReduceSumSquare"]

# -- element-wise, normalization, pooling: channels stay where they are
register(UNARY, channels=elementwise([0]))
register(BINARY, channels=elementwise())
register("BatchNormalization", channels=normalization({1: BN_SCALE, 2: PARAM, 3: PARAM, 4: PARAM}))
register("InstanceNormalization", channels=normalization({1: PARAM, 2: PARAM}))
register("LayerNormalization", channels=layer_norm)
register(["Softmax", "LogSoftmax"], channels=softmax)
register(POOLS, channels=channel_preserving)
register(["Resize", "Upsample"], channels=resize)
register("Pad", channels=pad)
register(REDUCTIONS, channels=reduce)
# -- layout: channels move (offsets, blocks, permutations)
register(["Reshape", "Flatten"], channels=reshape)
register("Concat", channels=concat)
register("Split", channels=split)
register("Slice", channels=slice_)
register("Transpose", channels=transpose)
register("Unsqueeze", channels=unsqueeze)
register("Squeeze", channels=squeeze)
# -- the layers: sources and exits of channel groups, and the MACs
register("Conv", channels=conv, macs=mac.conv_counter(0, 1), kernels=("Conv", "FusedConv", "NchwcConv"), linear=True)
register("ConvTranspose", channels=conv_transpose, macs=mac.conv_transpose_macs, kernels=("ConvTranspose",), linear=True)
register("Gemm", channels=gemm, macs=mac.gemm_macs, kernels=("Gemm", "FusedGemm"), linear=True)
register("MatMul", channels=matmul, macs=mac.matmul_counter(0, 1), kernels=("MatMul", "FusedMatMul"), linear=True)
register("Einsum", macs=mac.einsum_macs)
# -- attention: heads are channel groups (heads.py)
register("Attention", channels=attention, macs=mac.attention_macs)
register("Gather", channels=heads.gather)
# -- quantized forms: MACs and profile kernels only (pruning and the other passes work on float models)
register("ConvInteger", macs=mac.conv_counter(0, 1), kernels=("ConvInteger",))
register("QLinearConv", macs=mac.conv_counter(0, 3), kernels=("QLinearConv",))
register("MatMulInteger", macs=mac.matmul_counter(0, 1),
         kernels=("MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"))
register("QLinearMatMul", macs=mac.matmul_counter(0, 3), kernels=("QLinearMatMul",))
register("MatMulNBits", macs=mac.matmul_nbits_macs, domain="com.microsoft")
