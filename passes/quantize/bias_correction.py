"""Bias correction (Nagel et al. 2019, sec. 4.2, empirical variant) of the quantized model, in place.

Quantizing weights W to W_q shifts a layer's expected output by (W_q - W) E[x]; with E[x] the per-channel
mean of the layer's float input on the calibration data, subtracting that shift from the bias removes the
systematic part of the error:
    Conv:  delta[o] = sum_{c in group(o), k} (W_q - W)[o, c, k] * E[x_c]   (zero padding at borders ignored)
    Gemm:  delta = E[x] @ (W_q - W)^T  (transB=1)  or  E[x] @ (W_q - W)
The corrected float bias is re-quantized with the bias's own scale (input scale * weight scale).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from onnxslim import linear


def dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int) -> np.ndarray:
    q = q.astype(np.float64)
    zero = np.zeros(1) if zero is None else zero.astype(np.float64)
    if scale.size > 1:
        shape = [1] * q.ndim
        shape[axis % q.ndim] = -1
        scale, zero = scale.reshape(shape), (zero.reshape(shape) if zero.size > 1 else zero)
    return (q - zero) * scale


def dequantized(dq: onnx.NodeProto, inits: dict) -> np.ndarray | None:
    """What a DequantizeLinear of initializers computes (float64); None when its data or scale is not one."""
    args = [numpy_helper.to_array(inits[x]) if x in inits else None for x in dq.input]
    if args[0] is None or args[1] is None:
        return None
    axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
    return dequantize(args[0], args[1], args[2] if len(args) > 2 else None, axis)


def correct(qmodel: onnx.ModelProto, fmodel: onnx.ModelProto, input_means: dict[str, np.ndarray]) -> dict:
    """Fix the int32 biases of every quantized Conv/Gemm whose float input mean is known; returns a report."""
    inits = {i.name: i for i in qmodel.graph.initializer}
    producers = {o: n for n in qmodel.graph.node for o in n.output}
    float_nodes = {n.name: n for n in fmodel.graph.node if n.name}
    float_inits = {i.name: i for i in fmodel.graph.initializer}
    corrected, skipped, shifts = [], [], []
    for node in qmodel.graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or node.name not in float_nodes:
            continue
        fnode = float_nodes[node.name]
        mean = input_means.get(fnode.input[0])
        wdq, bdq = producers.get(node.input[1]), producers.get(node.input[2])
        if mean is None or wdq is None or bdq is None or wdq.op_type != "DequantizeLinear" or bdq.op_type != "DequantizeLinear":
            continue
        if fnode.input[1] not in float_inits or fnode.input[2] not in float_inits or any(x not in inits for x in bdq.input[:2]):
            skipped.append({"node": node.name, "reason": "weight or bias not constant"})
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Gemm" and (attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0)):
            skipped.append({"node": node.name, "reason": "Gemm with alpha/beta/transA"})
            continue
        w = numpy_helper.to_array(float_inits[fnode.input[1]]).astype(np.float64)
        wq = dequantized(wdq, inits)
        if wq is None:
            continue
        dw = wq - w
        if node.op_type == "Conv":
            groups = int(attrs.get("group", 1))
            cin_g, cout_g = dw.shape[1], dw.shape[0] // groups
            if mean.shape[0] != cin_g * groups:
                continue
            per_in = linear.matrix("Conv", dw).reshape(dw.shape[0], cin_g, -1).sum(axis=2)  # [out, in per group]
            means = mean.reshape(groups, cin_g)
            delta = np.einsum("gol,gl->go", per_in.reshape(groups, cout_g, cin_g), means).reshape(-1)
        else:
            delta = mean @ linear.matrix("Gemm", dw, attrs).T
        b = numpy_helper.to_array(float_inits[fnode.input[2]]).astype(np.float64)
        bq_init, bscale = inits[bdq.input[0]], numpy_helper.to_array(inits[bdq.input[1]]).astype(np.float64)
        info = np.iinfo(np.int32)
        q = np.clip(np.round((b - delta) / bscale), info.min, info.max).astype(np.int32)
        bq_init.CopyFrom(numpy_helper.from_array(q.reshape(numpy_helper.to_array(bq_init).shape), bq_init.name))
        corrected.append(node.name)
        shifts.append(float(np.abs(delta).mean()))
    return {"corrected": len(corrected), "mean_abs_shift": float(np.mean(shifts)) if shifts else 0.0, "skipped": skipped}
