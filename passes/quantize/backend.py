"""The one place that calls onnxruntime.quantization: QDQ placement, weight and bias quantization are its job.

We hand it our own activation ranges through `TensorQuantOverrides` (rmin/rmax per tensor), so its
calibration run only needs one tiny batch; which nodes to quantize and how (symmetric, per-channel
axis, output exclusions) comes from the target rules.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np
import onnx

from onnxslim.errors import SlimError
from onnxslim.graph import fits_protobuf
from onnxslim.lazy_import import lazy_module
from onnxslim.units import first_line

ort = lazy_module("onnxruntime")


@dataclass
class QdqSettings:
    per_channel: bool = True
    activation_symmetric: bool = False
    activation_type: str = "uint8"          # "uint8" | "int8"
    weight_type: str = "int8"               # "int8" | "uint8" (symmetric uint8 weights, zero point 128)
    reduce_range: bool = False              # 7-bit weights: avoids int16 saturation of u8*s8 on CPUs without VNNI
    op_types: list | None = None            # None: everything onnxruntime knows how to quantize
    exclude_output_op_types: list = field(default_factory=list)
    keep_removable_activations: bool = False
    per_channel_axis: dict = field(default_factory=dict)   # {"MatMul": 1}


def float_activations(model: onnx.ModelProto) -> list[str]:
    """Names of every float tensor produced by a node or fed as a graph input (shape-inferred types)."""
    inferred = onnx.shape_inference.infer_shapes(model) if fits_protobuf(model) else model
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    inits = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    names += [o for n in model.graph.node for o in n.output if o]
    return [n for n in dict.fromkeys(names) if types.get(n) == onnx.TensorProto.FLOAT]


class _OneBatch:
    """A CalibrationDataReader that yields a single feed: our ranges override whatever it measures."""

    def __init__(self, feed: dict):
        self._feeds = [feed]

    def get_next(self):
        return self._feeds.pop() if self._feeds else None

    def __len__(self):
        return 1

    def set_range(self, start_index, end_index):
        pass


@contextlib.contextmanager
def quiet():
    """onnxruntime.quantization logs warnings (pre-processing advice, unused initializers) meant for its own users."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    ort.set_default_logger_severity(3)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


@contextlib.contextmanager
def quantizing(which: str = ""):
    """onnxruntime.quantization at work (`which` of its quantizers): quiet, and a failure as one line."""
    try:
        with quiet():
            yield
    except SlimError:
        raise
    except Exception as err:
        raise SlimError(f"onnxruntime.quantization{which} failed: {type(err).__name__}: {first_line(err)}") from None


def quantize_qdq(model: onnx.ModelProto, ranges: dict[str, tuple[float, float]], feed: dict, settings: QdqSettings,
                 *, nodes_to_exclude: list[str] | None = None, weight_overrides: dict | None = None) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    act_type = QuantType.QUInt8 if settings.activation_type == "uint8" else QuantType.QInt8
    overrides = {name: [{"rmin": np.array(lo, dtype=np.float32), "rmax": np.array(hi, dtype=np.float32)}]
                 for name, (lo, hi) in ranges.items()}
    overrides.update(weight_overrides or {})
    extra = {
        "ActivationSymmetric": settings.activation_symmetric,
        "WeightSymmetric": True,
        "TensorQuantOverrides": overrides,
        "OpTypesToExcludeOutputQuantization": list(settings.exclude_output_op_types),
        "QDQKeepRemovableActivations": settings.keep_removable_activations,
    }
    if settings.per_channel_axis:
        extra["QDQOpTypePerChannelSupportToAxis"] = dict(settings.per_channel_axis)
    with tempfile.TemporaryDirectory(prefix="onnxslim-q-") as tmp:
        out = os.path.join(tmp, "q.onnx")
        with quantizing():
            # quantize_static turns the proto it is given into external-data form in place: give it a copy
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            quantize_static(copy, out, _OneBatch(feed), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=settings.op_types, per_channel=settings.per_channel,
                            activation_type=act_type, reduce_range=settings.reduce_range,
                            weight_type=QuantType.QUInt8 if settings.weight_type == "uint8" else QuantType.QInt8,
                            nodes_to_exclude=list(nodes_to_exclude or []), extra_options=extra)
        return onnx.load(out)


def quantize_dynamic_int8(model: onnx.ModelProto, *, per_channel: bool, op_types: list[str], nodes_to_exclude=None,
                          reduce_range: bool = False) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    with tempfile.TemporaryDirectory(prefix="onnxslim-qd-") as tmp:
        src, out = os.path.join(tmp, "in.onnx"), os.path.join(tmp, "q.onnx")
        onnx.save_model(model, src, save_as_external_data=not fits_protobuf(model))
        with quantizing(" (dynamic)"):
            quantize_dynamic(src, out, op_types_to_quantize=op_types, per_channel=per_channel, reduce_range=reduce_range,
                             weight_type=QuantType.QInt8, nodes_to_exclude=list(nodes_to_exclude or []))
        return onnx.load(out)
