"""How far the int8 model is from the float one, on calibration batches (metrics.quantized_fidelity).

For the onnxruntime target this is measured with onnxruntime's real int8 kernels (full graph optimization),
so kernel effects such as int16 saturation on CPUs without VNNI show up, not only rounding. A TensorRT-target
graph is measured as a QDQ simulation (basic optimizations: no int8 kernel fusion): onnxruntime's CPU
kernels are not what TensorRT will run.
"""
from __future__ import annotations

import onnx

from onnxslim.metrics import quantized_fidelity, worst_relative_error
from onnxslim.runtime import outputs_on

RUN_FAILED = "onnxruntime cannot run the model in the int8 fidelity check"


def outputs(model: onnx.ModelProto, feeds: list[dict], optimize: bool = True) -> list[dict]:
    return outputs_on(model, feeds, basic=not optimize, what=RUN_FAILED)


def error(ref: list[dict], model: onnx.ModelProto, feeds: list[dict], names: list[str], optimize: bool = True) -> float:
    """Worst relative output error of `model` against the reference outputs `ref` on `feeds`."""
    return worst_relative_error(quantized_fidelity(ref, outputs(model, feeds, optimize), names))
