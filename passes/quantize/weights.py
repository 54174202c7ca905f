"""Per-channel weight ranges handed to onnxruntime.quantization as TensorQuantOverrides.

Two things its defaults do not do:
- MSE-optimal clipping: the symmetric range of each output channel is searched on a grid of fractions of
  max|w| for the smallest squared rounding-plus-clipping error (a few large weights otherwise stretch the
  step for the whole channel);
- 7-bit weights only where the kernel needs them: on x86 CPUs without VNNI, onnxruntime's u8 x s8 GEMM
  sums pairs of products in int16 and saturates, so Conv (regular and grouped) and Gemm weights get a
  7-bit range; depthwise convolutions run in a kernel that accumulates in int32 and keep all 8 bits.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import numpy_helper

from onnxslim.ops.macs import attrs_of

GRID = np.linspace(0.5, 1.0, 26)


def mse_range(w: np.ndarray, qmax: int) -> np.ndarray:
    """Per output channel (axis 0) the clip value in (0, max|w|] minimizing the quantization MSE."""
    flat = np.abs(w.reshape(w.shape[0], -1)).astype(np.float64)
    amax = flat.max(axis=1)
    best, best_err = amax.copy(), np.full(len(amax), np.inf)
    signed = w.reshape(w.shape[0], -1).astype(np.float64)
    for frac in GRID:
        clip = np.maximum(amax * frac, 1e-12)
        step = (clip / qmax)[:, None]
        deq = np.clip(np.round(signed / step), -qmax, qmax) * step
        err = ((deq - signed) ** 2).sum(axis=1)
        better = err < best_err
        best[better], best_err[better] = clip[better], err[better]
    return best


def is_depthwise(node: onnx.NodeProto, w: np.ndarray) -> bool:
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    return node.op_type == "Conv" and group > 1 and w.shape[1] == 1


def overrides(model: onnx.ModelProto, *, per_channel: bool, seven_bit_nodes: set[str], mse: bool, exclude: set[str] = frozenset()) -> tuple[dict, dict]:
    """({weight name: per-channel override list}, summary) for the Conv/Gemm weights of `model`."""
    if not per_channel:
        return {}, {"weights": 0}
    inits = {i.name: i for i in model.graph.initializer}
    users = Counter(x for node in model.graph.node for x in node.input)
    out, seven, eight = {}, 0, 0
    for node in model.graph.node:
        if node.name in exclude or node.op_type not in ("Conv", "Gemm") or len(node.input) < 2 or node.input[1] not in inits:
            continue
        if node.op_type == "Gemm" and not attrs_of(node).get("transB", 0):
            continue  # per-channel axis 1 there; leave it to onnxruntime's defaults
        name = node.input[1]
        if users[name] != 1 or name in out:
            continue
        w = numpy_helper.to_array(inits[name])
        narrow = node.name in seven_bit_nodes and not is_depthwise(node, w)
        qmax = 64 if narrow else 127  # onnxruntime's reduced symmetric int8 range is [-64, 64]
        clip = mse_range(w, qmax) if mse else np.abs(w.reshape(w.shape[0], -1)).max(axis=1)
        out[name] = [{"axis": 0, "reduce_range": bool(narrow), "rmin": np.array(-c, np.float32), "rmax": np.array(c, np.float32)} for c in clip]
        seven += narrow
        eight += not narrow
    return out, {"weights": len(out), "seven_bit": seven, "eight_bit": eight, "mse_clipping": mse}
