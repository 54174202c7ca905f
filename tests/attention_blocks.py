"""Small encoder blocks in the form torch/transformers exports BERT/MiniLM attention, built with onnx.helper.

x [B, S, E] -> Q, K, V = MatMul + bias Add -> Reshape (B, S, H, D) -> Transpose (Q, V: 0,2,1,3; K: 0,2,3,1)
-> scores MatMul -> Mul 1/sqrt(D) -> Add mask -> Softmax -> context MatMul -> Transpose -> Reshape (B, S, E)
-> output projection MatMul + bias -> Add x -> LayerNormalization -> FFN (MatMul, Gelu as Erf, MatMul)
-> Add -> LayerNormalization -> y.

`dynamic=True`: batch and sequence are symbolic; the head Reshapes read their leading dims from Shape
(Concat of Shape slices and the constants H, D, as the exporter writes `x.size()[:-1] + (H, D)`), and the
mask is built the way transformers does: `mask[:, None, None, :]` expanded to (B, 1, S, S) through an
Expand whose target is `Where(Equal(Concat(B, -1, S, S), -1), 1, ...)`, so shape inference cannot tell that
its head axis is 1.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from oracle import GraphBuilder


def _i64(values):
    return np.asarray(values, dtype=np.int64)


def _static_mask(b: GraphBuilder, mask: str) -> str:
    """[B, S] int64 of 1/0 -> [B, 1, 1, S] float of 0 / -1e4."""
    m = b.op("Cast", [b.op("Unsqueeze", [mask, b.const(_i64([1, 2]))])], to=TensorProto.FLOAT)
    return b.op("Mul", [b.op("Sub", [b.const(np.float32(1)), m]), b.const(np.float32(-1e4))])


def _dynamic_mask(b: GraphBuilder, mask: str) -> str:
    """The transformers form: (B, 1, 1, S) expanded to (B, 1, S, S) by a run-time target shape."""
    m = b.op("Cast", [b.op("Unsqueeze", [mask, b.const(_i64([1, 2]))])], to=TensorProto.BOOL)
    shape = b.op("Shape", [mask])
    batch = b.op("Gather", [shape, b.const(_i64([0]))], axis=0)
    seq = b.op("Gather", [shape, b.const(_i64([1]))], axis=0)
    target = b.op("Concat", [batch, b.const(_i64([-1])), seq, seq], axis=0)
    target = b.op("Where", [b.op("Equal", [target, b.const(_i64([-1, -1, -1, -1]))]), b.const(_i64([1, 1, 1, 1])), target])
    expanded = b.op("Expand", [m, target])
    return b.op("Where", [expanded, b.const(np.float32(0)), b.const(np.float32(-3.4e38))])


def _heads_shape(b: GraphBuilder, x: str, heads: int, dim: int, dynamic: bool) -> str:
    if not dynamic:
        return b.const(_i64([0, 0, heads, dim]))
    lead = b.op("Slice", [b.op("Shape", [x]), b.const(_i64([0])), b.const(_i64([2]))])
    return b.op("Concat", [lead, b.const(_i64([heads, dim]))], axis=0)


def _merge_shape(b: GraphBuilder, x: str, width: int, dynamic: bool) -> str:
    if not dynamic:
        return b.const(_i64([0, 0, width]))
    lead = b.op("Slice", [b.op("Shape", [x]), b.const(_i64([0])), b.const(_i64([2]))])
    return b.op("Concat", [lead, b.const(_i64([width]))], axis=0)


def attention(b: GraphBuilder, x: str, mask_add: str, width: int, heads: int, dynamic: bool) -> str:
    dim = width // heads

    def project(perm):
        t = b.op("Add", [b.randn(width), b.op("MatMul", [x, b.randn(width, width)])])
        t = b.op("Reshape", [t, _heads_shape(b, x, heads, dim, dynamic)])
        return b.op("Transpose", [t], perm=perm)

    q, k, v = project([0, 2, 1, 3]), project([0, 2, 3, 1]), project([0, 2, 1, 3])
    scores = b.op("Mul", [b.op("MatMul", [q, k]), b.const(np.float32(1 / np.sqrt(dim)))])
    probs = b.op("Softmax", [b.op("Add", [scores, mask_add])], axis=-1)
    context = b.op("Transpose", [b.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
    merged = b.op("Reshape", [context, _merge_shape(b, x, width, dynamic)])
    return b.op("Add", [b.op("MatMul", [merged, b.randn(width, width)]), b.randn(width)])


def layer_norm(b: GraphBuilder, x: str, width: int) -> str:
    return b.op("LayerNormalization", [x, b.const(np.ones(width, np.float32)), b.const(np.zeros(width, np.float32))], axis=-1)


def encoder_block(*, width: int = 32, heads: int = 4, ffn: int = 48, layers: int = 1, dynamic: bool = False,
                  batch: int = 2, seq: int = 5, seed: int = 0) -> onnx.ModelProto:
    b = GraphBuilder(seed)
    mask_add = (_dynamic_mask if dynamic else _static_mask)(b, "attention_mask")
    x = "x"
    for _ in range(layers):
        x = layer_norm(b, b.op("Add", [attention(b, x, mask_add, width, heads, dynamic), x]), width)
        h = b.op("Add", [b.op("MatMul", [x, b.randn(width, ffn)]), b.randn(ffn)])
        h = b.op("Mul", [h, b.op("Sigmoid", [b.op("Mul", [h, b.const(np.float32(1.702))])])])
        x = layer_norm(b, b.op("Add", [b.op("Add", [b.op("MatMul", [h, b.randn(ffn, width)]), b.randn(width)]), x]), width)
    dims = ["batch", "sequence"] if dynamic else [batch, seq]
    model = b.model({"x": [*dims, width]}, [x])
    model.graph.input.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, dims))
    return onnx.shape_inference.infer_shapes(model)


def feed(batch: int, seq: int, width: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, seq), np.int64)
    mask[0, seq - 2:] = 0  # padding in the first sample: the mask must reach the scores
    return {"x": rng.standard_normal((batch, seq, width)).astype(np.float32), "attention_mask": mask}


def attention_op_block(*, width: int = 32, q_heads: int = 4, kv_heads: int = 4, four_d: bool = False,
                       seed: int = 0) -> onnx.ModelProto:
    """x [B, S, E] -> Q (E), K and V (kv_heads * D) projections -> ONNX Attention (opset 23; the 3-D form with
    head-count attributes, or the 4-D form behind Reshape/Transpose) -> output projection -> y."""
    b = GraphBuilder(seed)
    dim = width // q_heads

    def project(heads):
        t = b.op("Add", [b.op("MatMul", ["x", b.randn(width, heads * dim)]), b.randn(heads * dim)])
        if four_d:
            t = b.op("Transpose", [b.op("Reshape", [t, b.const(_i64([0, 0, heads, dim]))])], perm=[0, 2, 1, 3])
        return t

    q, k, v = project(q_heads), project(kv_heads), project(kv_heads)
    attrs = {} if four_d else {"q_num_heads": q_heads, "kv_num_heads": kv_heads}
    y = b.op("Attention", [q, k, v], **attrs)
    if four_d:
        y = b.op("Reshape", [b.op("Transpose", [y], perm=[0, 2, 1, 3]), b.const(_i64([0, 0, width]))])
    y = b.op("Add", [b.op("MatMul", [y, b.randn(width, width)]), b.randn(width)])
    model = b.model({"x": ["batch", "sequence", width]}, [y], opset=23)
    model.ir_version = 10
    return onnx.shape_inference.infer_shapes(model)


def packed_qkv_block(*, form: str, width: int = 32, heads: int = 4, tokens: int = 6, windows: int = 2,
                     seed: int = 0) -> onnx.ModelProto:
    """One projection makes Q, K and V (3E features), picked apart by Gather, as torchvision exports them.
    `vit` (nn.MultiheadAttention, batch 1): x [S, 1, E] -> Reshape (S, 1, 3, E) -> Unsqueeze -> Transpose ->
    Squeeze -> Gather 0/1/2 -> Reshape (S, H, D) -> Transpose -> Reshape (1, H, S, D) -> attention.
    `swin` (window attention): x [W, N, E] -> Reshape (W, N, 3, H, D) -> Transpose (3, W, H, N, D) -> Gather
    -> scores + a relative position bias constant [1, H, N, N] (indexed by head) -> attention."""
    b = GraphBuilder(seed)
    dim = width // heads
    qkv = b.op("Add", [b.op("MatMul", ["x", b.randn(width, 3 * width)]), b.randn(3 * width)])
    if form == "vit":
        t = b.op("Reshape", [qkv, b.const(_i64([tokens, 1, 3, width]))])
        t = b.op("Transpose", [b.op("Unsqueeze", [t, b.const(_i64([0]))])], perm=[3, 1, 2, 0, 4])
        t = b.op("Squeeze", [t, b.const(_i64([3]))])

        def pick(i):
            p = b.op("Gather", [t, b.const(np.int64(i))], axis=0)
            p = b.op("Transpose", [b.op("Reshape", [p, b.const(_i64([tokens, heads, dim]))])], perm=[1, 0, 2])
            return b.op("Reshape", [p, b.const(_i64([1, heads, tokens, dim]))])
    else:
        t = b.op("Reshape", [qkv, b.const(_i64([windows, tokens, 3, heads, dim]))])
        t = b.op("Transpose", [t], perm=[2, 0, 3, 1, 4])

        def pick(i):
            return b.op("Gather", [t, b.const(np.int64(i))], axis=0)
    q, k, v = pick(0), pick(1), pick(2)
    q = b.op("Mul", [q, b.const(np.float32(1 / np.sqrt(dim)))])
    scores = b.op("MatMul", [q, b.op("Transpose", [k], perm=[0, 1, 3, 2])])
    if form == "swin":
        scores = b.op("Add", [scores, b.randn(1, heads, tokens, tokens)])
    context = b.op("MatMul", [b.op("Softmax", [scores], axis=-1), v])
    if form == "vit":
        merged = b.op("Reshape", [b.op("Transpose", [context], perm=[2, 0, 1, 3]), b.const(_i64([tokens, width]))])
        shape = [tokens, 1, width]
    else:
        merged = b.op("Reshape", [b.op("Transpose", [context], perm=[0, 2, 1, 3]), b.const(_i64([windows, tokens, width]))])
        shape = [windows, tokens, width]
    y = b.op("Add", [b.op("MatMul", [merged, b.randn(width, width)]), b.randn(width)])
    return b.model({"x": shape}, [y])
