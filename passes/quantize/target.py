"""What each deployment target needs from the QDQ graph, and CPU facts that change the best int8 form.

TensorRT (its "explicit quantization" rules): symmetric int8 activations and weights (zero point 0),
per-channel weights on the output-channel axis, Q/DQ only on the inputs of the layers that compute in int8
(Conv, Gemm, MatMul) and none on their outputs (TensorRT fuses the following bias/activation/residual add
and decides the output precision itself), ReLU/Clip kept explicit. Convs whose channel counts TensorRT has
no int8 kernel for (fewer than 16 and not a multiple of 8, e.g. a 3-channel RGB stem) stay in float.
"""
from __future__ import annotations

import platform

import onnx_graphsurgeon as gs

from .backend import QdqSettings

TENSORRT_INT8_OPS = ["Conv", "Gemm", "MatMul", "ConvTranspose"]


def settings_for(target: str, per_channel: bool, reduce_range: bool) -> QdqSettings:
    if target == "tensorrt":
        return QdqSettings(per_channel=per_channel, activation_symmetric=True, activation_type="int8",
                           op_types=list(TENSORRT_INT8_OPS), exclude_output_op_types=list(TENSORRT_INT8_OPS),
                           keep_removable_activations=True, per_channel_axis={"MatMul": 1})
    # onnxruntime CPU: u8 activations x s8 weights is the fast x86 kernel
    return QdqSettings(per_channel=per_channel, activation_type="uint8", reduce_range=reduce_range)


def _narrow(c: int) -> bool:
    return c < 16 and c % 8 != 0


def tensorrt_float_convs(graph: gs.Graph) -> list[dict]:
    """Convs TensorRT has no int8 kernel for, with the reason."""
    left = []
    for node in graph.nodes:
        if node.op != "Conv" or not isinstance(node.inputs[1], gs.Constant):
            continue
        w = node.inputs[1].values
        out_c, in_c = int(w.shape[0]), int(w.shape[1]) * int(node.attrs.get("group", 1))
        if _narrow(in_c) or _narrow(out_c):
            left.append({"node": node.name, "reason": f"TensorRT has no int8 kernel for {in_c} input / {out_c} output channels (fewer than 16 and not a multiple of 8)"})
    return left


def cpu_has_vnni() -> bool | None:
    """True/False on x86 Linux from /proc/cpuinfo; None when it cannot be told."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        return None
    return any(f in flags.split() for f in ("avx512_vnni", "avx_vnni", "amx_int8"))
