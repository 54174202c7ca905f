"""The quantize pass's config: its fields, their checks and the command-line options that set them."""
from __future__ import annotations

from dataclasses import dataclass, field

import click

from onnxslim.errors import SlimError
from onnxslim.protocol import option

MODES = ("int8", "int8-dynamic", "int4", "int8-weight")
WEIGHT_ONLY = ("int4", "int8-weight")  # blockwise weights to MatMulNBits / GatherBlockQuantized (weight_only.py)
METHODS = ("minmax", "percentile", "entropy")
TARGETS = ("onnxruntime", "tensorrt")
FIDELITY_SAMPLES = 64  # calibration samples the fidelity and fallback measurements use


def _off_when_set(value, given):
    """A `--no-x` / `--per-tensor` flag: set turns the field off; unset leaves the default."""
    return False if value else None


def _weight_only_exclude(value, given):
    """--exclude names nodes for the weight-only modes; int8's float nodes come from --tolerance and the target."""
    return tuple(value) if value is not None and given.get("quantize") in WEIGHT_ONLY else None


@dataclass
class QuantizeConfig:
    # "int8" (static QDQ) | "int8-dynamic" (weights only, activations at run time) | "int4" | "int8-weight"
    mode: str = field(default="int8", metadata=option(
        "--quantize", "quantize", type=click.Choice(list(MODES)), enables=True,
        help="Quantize last: QDQ int8, dynamic int8, or weight-only blockwise int4 / int8 (MatMulNBits)."))
    # "minmax" | "percentile" | "entropy" (minmax measured best on EfficientNet-Lite0)
    calib_method: str = field(default="minmax", metadata=option(
        "--calib-method", type=click.Choice(list(METHODS)), default=None, help="int8 activation ranges."))
    per_channel: bool = field(default=True, metadata=option(
        "--per-tensor", is_flag=True, convert=_off_when_set, help="int8: per-tensor weights instead of per-channel."))
    target: str = field(default="onnxruntime", metadata=option(  # "onnxruntime" | "tensorrt"
        "--target", "quant_target", type=click.Choice(list(TARGETS)), default=None, help="int8 QDQ form for this runtime."))
    # cross-layer equalization of Conv->ReLU->Conv and depthwise-separable pairs
    cle: bool = field(default=True, metadata=option(
        "--no-cle", is_flag=True, convert=_off_when_set, help="int8: no cross-layer equalization."))
    cle_relu6_as_relu: bool = False     # also equalize across ReLU6 by turning it into ReLU (not exact)
    bias_correction: bool = field(default=True, metadata=option(
        "--no-bias-correction", is_flag=True, convert=_off_when_set, help="int8: no bias correction."))
    # max relative L2 output error on calibration data; None: no fallback
    tolerance: float | None = field(default=None, metadata=option(
        "--tolerance", type=float, help="int8: keep the most sensitive nodes in float until the output error is within this."))
    percentile: float = 99.99
    reduce_range: bool | None = None    # 7-bit non-depthwise weights; None: on when the CPU has no VNNI (u8*s8 saturates)
    weight_mse: bool = True             # per-channel weight clipping searched for the smallest MSE
    eight_bit_nodes: tuple = ()         # node names that keep 8-bit weights even when reduce_range is on
    batch_size: int = 8
    max_fallback_nodes: int | None = None
    measure_latency: bool = True
    latency_runs: int = 20
    dynamic_op_types: tuple = ("MatMul", "Gemm")
    # weight-only modes (int4, int8-weight)
    # weights per scale along the input features; 32 measured best on MiniLM (RESULTS.md)
    block_size: int = field(default=32, metadata=option(
        "--block-size", type=int, help="int4/int8-weight: weights per scale (power of 2, >= 16; default 32)."))
    # no zero point (asymmetric measured closer on MiniLM)
    symmetric: bool = field(default=False, metadata=option(
        "--symmetric/--asymmetric", default=None, help="int4/int8-weight: no zero point (default: asymmetric)."))
    accuracy_level: int | None = None   # MatMulNBits compute type; None: int8 compute (4) for 8 bits, onnxruntime's default for 4
    min_elements: int = 16384           # smaller weights stay in float (listed): too little to gain
    # Gather embedding tables to GatherBlockQuantized too
    embeddings: bool = field(default=True, metadata=option(
        "--quantize-embeddings/--no-quantize-embeddings", default=None, help="int4/int8-weight: Gather tables too (default on)."))
    exclude: tuple = field(default=(), metadata=option(  # node names left in float
        "--exclude", multiple=True, convert=_weight_only_exclude, help="Node name to leave untouched (repeatable)."))

    def check(self) -> None:
        if self.mode not in MODES:
            raise SlimError(f"--quantize {self.mode}: expected one of {', '.join(MODES)}")
        if self.calib_method not in METHODS:
            raise SlimError(f"--calib-method {self.calib_method}: expected one of {', '.join(METHODS)}")
        if self.target not in TARGETS:
            raise SlimError(f"--target {self.target}: expected one of {', '.join(TARGETS)}")
        if self.tolerance is not None and not (self.tolerance > 0):
            raise SlimError(f"--tolerance must be a positive number (max relative output error), got {self.tolerance}")
        if self.mode in WEIGHT_ONLY and (self.block_size < 16 or self.block_size & (self.block_size - 1)):
            raise SlimError(f"--block-size {self.block_size}: onnxruntime's kernels need a power of 2, at least 16")
        if not 50 < self.percentile <= 100:
            raise SlimError(f"percentile must be in (50, 100], got {self.percentile}")
