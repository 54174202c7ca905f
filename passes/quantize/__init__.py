"""int8 quantization pass: QDQ models for onnxruntime and TensorRT, built on onnxruntime.quantization.

onnxruntime.quantization places the Q/DQ nodes and quantizes weights and biases. This pass adds what it
lacks: exact float rewrites that quantize better (zero Pad folded into Conv, cross-layer equalization),
our own activation ranges (minmax, percentile, KL entropy that really searches thresholds), bias
correction, target rules for TensorRT, 7-bit weights on CPUs whose u8*s8 kernels saturate, an
accuracy-aware fallback to float for the most damaging nodes, and a report of the fidelity measured with
onnxruntime's real int8 kernels (SQNR per output, top-1 agreement, size and latency ratios).

Quantization runs last in a pipeline: it needs the final weights.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx

from onnxslim.context import Context, PassResult
from onnxslim.errors import SlimError
from onnxslim.graph import to_graph, to_model

from . import backend, bias_correction, equalize, fidelity, prepare, ranges, target, weights

MODES = ("int8", "int8-dynamic")
METHODS = ("minmax", "percentile", "entropy")
TARGETS = ("onnxruntime", "tensorrt")
FIDELITY_SAMPLES = 64  # calibration samples the fidelity and fallback measurements use


@dataclass
class QuantizeConfig:
    mode: str = "int8"                  # "int8" (static QDQ) | "int8-dynamic" (weights only, activations at run time)
    calib_method: str = "entropy"       # "minmax" | "percentile" | "entropy"
    per_channel: bool = True
    target: str = "onnxruntime"         # "onnxruntime" | "tensorrt"
    cle: bool = True                    # cross-layer equalization of Conv->ReLU->Conv and depthwise-separable pairs
    cle_relu6_as_relu: bool = False     # also equalize across ReLU6 by turning it into ReLU (not exact)
    bias_correction: bool = True
    tolerance: float | None = None      # max relative L2 output error on calibration data; None: no fallback
    percentile: float = 99.99
    reduce_range: bool | None = None    # 7-bit non-depthwise weights; None: on when the CPU has no VNNI (u8*s8 saturates)
    weight_mse: bool = True             # per-channel weight clipping searched for the smallest MSE
    batch_size: int = 8
    max_fallback_nodes: int | None = None
    measure_latency: bool = True
    latency_runs: int = 20
    dynamic_op_types: tuple = ("MatMul", "Gemm")


def _check(config: QuantizeConfig) -> None:
    if config.mode not in MODES:
        raise SlimError(f"--quantize {config.mode}: expected one of {', '.join(MODES)}")
    if config.calib_method not in METHODS:
        raise SlimError(f"--calib-method {config.calib_method}: expected one of {', '.join(METHODS)}")
    if config.target not in TARGETS:
        raise SlimError(f"--target {config.target}: expected one of {', '.join(TARGETS)}")
    if config.tolerance is not None and not (config.tolerance > 0):
        raise SlimError(f"--tolerance must be a positive number (max relative output error), got {config.tolerance}")
    if not 50 < config.percentile <= 100:
        raise SlimError(f"percentile must be in (50, 100], got {config.percentile}")


def run(model: onnx.ModelProto, config: QuantizeConfig | None = None, ctx: Context | None = None) -> PassResult:
    config = config or QuantizeConfig()
    ctx = ctx or Context()
    _check(config)
    from onnxslim.calibration import load_calibration
    dataset = ctx.calibration
    if dataset is None:
        dataset = load_calibration(None, model, input_shapes=ctx.input_shapes, seed=ctx.seed, size=16)
    report = {"mode": config.mode, "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
              "calibration": dataset.describe()}
    if not dataset.real:
        report["warning"] = "calibrated on random data: the ranges and accuracy numbers mean little; pass real data (--calib)"
    feeds = _fidelity_feeds(dataset, config.batch_size)
    if config.mode == "int8-dynamic":
        qmodel = backend.quantize_dynamic_int8(model, per_channel=config.per_channel, op_types=list(config.dynamic_op_types))
    else:
        qmodel = _static(model, config, ctx, dataset, feeds, report)
    _measure(model, qmodel, feeds, config, report)
    return PassResult(qmodel, report)


def _fidelity_feeds(dataset, batch_size: int) -> list[dict]:
    feeds, seen = [], 0
    for feed in dataset.batches(batch_size):
        feeds.append(feed)
        seen += len(next(iter(feed.values())))
        if seen >= FIDELITY_SAMPLES:
            break
    return feeds


def _prepare(model: onnx.ModelProto, config: QuantizeConfig, report: dict):
    try:
        from onnxslim.passes import cleanup
        model = cleanup.run(model).model
    except ImportError:  # the cleanup pass is optional here: it folds constants/BN so weights are initializers
        pass
    graph = to_graph(model)
    steps = {"pads_folded_into_conv": len(prepare.fold_pads(graph))}
    if config.bias_correction:
        steps["zero_biases_added"] = len(prepare.add_zero_biases(graph))
    if config.cle:
        report["cle"] = equalize.equalize(graph, relu6_as_relu=config.cle_relu6_as_relu)
    report["prepare"] = steps
    return graph, to_model(graph, like=model)


def _static(model, config: QuantizeConfig, ctx: Context, dataset, feeds, report) -> onnx.ModelProto:
    graph, prepared = _prepare(model, config, report)
    reduce_range = config.reduce_range
    vnni = target.cpu_has_vnni()
    if reduce_range is None:
        reduce_range = config.target == "onnxruntime" and vnni is False
    report["kernels"] = {"cpu_vnni": vnni, "reduce_range": reduce_range,
                         "why": "7-bit weights (depthwise convs excepted) keep u8*s8 products from saturating int16 on CPUs without VNNI" if reduce_range else None}
    # 7-bit weights go per layer through the overrides (depthwise kernels do not saturate), not globally
    settings = target.settings_for(config.target, config.per_channel, reduce_range and not config.per_channel)
    excluded = []
    if config.target == "tensorrt":
        excluded = target.tensorrt_float_convs(graph)
    report["left_in_float"] = list(excluded)
    names = backend.float_activations(prepared)
    mean_axes = {}
    if config.bias_correction:
        for node in prepared.graph.node:
            if node.op_type == "Conv":
                mean_axes[node.input[0]] = 1
            elif node.op_type == "Gemm":
                mean_axes[node.input[0]] = -1
    stats = ranges.collect(prepared, names, dataset, histogram=config.calib_method != "minmax",
                           batch_size=config.batch_size, mean_axes=mean_axes, progress=ctx.progress)
    symmetric = settings.activation_symmetric
    act_ranges = ranges.ranges_from_stats(stats, config.calib_method, symmetric=symmetric, percentile=config.percentile)
    clipped = [n for n in act_ranges if stats[n].absmax > 0 and max(abs(v) for v in act_ranges[n]) < 0.999 * stats[n].absmax]
    report["ranges"] = {"method": config.calib_method, "tensors": len(act_ranges), "clipped_below_minmax": len(clipped)}
    excluded_names = {e["node"] for e in excluded}
    # without VNNI every Conv/Gemm weight but the depthwise ones gets 7 bits (see weights.py); a 7-bit input
    # activation instead was tried and still saturates in onnxruntime's AVX2 kernels
    seven_weights = {n.name for n in prepared.graph.node} if reduce_range and config.per_channel else set()
    w_overrides, report["weights"] = weights.overrides(prepared, per_channel=config.per_channel, seven_bit_nodes=seven_weights,
                                                       mse=config.weight_mse, exclude=excluded_names)
    one = {k: v[:1] for k, v in feeds[0].items()}
    means = {n: s.channel_mean for n, s in stats.items() if s.channel_mean is not None}

    def build(exclude: list[str]) -> onnx.ModelProto:
        q = backend.quantize_qdq(prepared, act_ranges, one, settings, nodes_to_exclude=exclude, weight_overrides=w_overrides)
        if config.bias_correction:
            report["bias_correction"] = bias_correction.correct(q, prepared, means)
        return q

    base_exclude = [e["node"] for e in excluded]
    qmodel = build(base_exclude)
    if config.tolerance is not None:
        qmodel = _fallback(model, prepared, qmodel, build, base_exclude, feeds, config, report)
    return qmodel


def _fallback(model, prepared, qmodel, build, base_exclude, feeds, config, report) -> onnx.ModelProto:
    """Keep the nodes that add the most error in float, doubling their number until the tolerance holds."""
    ref = fidelity.outputs_on(model, feeds)
    names = [o.name for o in model.graph.output]
    optimize = config.target != "tensorrt"
    error = fidelity.worst_relative_error(fidelity.compare(ref, fidelity.outputs_on(qmodel, feeds, optimize=optimize), names))
    entry = {"tolerance": config.tolerance, "error_before": round(error, 6), "kept_in_float": [], "met": error <= config.tolerance}
    report["fallback"] = entry
    if entry["met"]:
        return qmodel
    ranking = _sensitivity(prepared, qmodel, feeds[:2], base_exclude)
    entry["ranking_top"] = [{"node": n, "added_error": round(d, 5)} for n, d in ranking[:10]]
    top = min(config.max_fallback_nodes or len(ranking), len(ranking))
    k, best = 1, (error, qmodel, [])
    while top:
        chosen = [n for n, _ in ranking[:k]]
        candidate = build(base_exclude + chosen)
        err = fidelity.worst_relative_error(fidelity.compare(ref, fidelity.outputs_on(candidate, feeds, optimize=optimize), names))
        if err < best[0]:
            best = (err, candidate, chosen)
        if err <= config.tolerance or k >= top:
            break
        k = min(2 * k, top)
    err, qmodel, chosen = best
    entry.update({"error_after": round(err, 6), "met": err <= config.tolerance, "kept_in_float": chosen})
    report["left_in_float"] += [{"node": n, "reason": "accuracy fallback (--tolerance)"} for n in chosen]
    return qmodel


def _sensitivity(prepared, qmodel, feeds, base_exclude) -> list[tuple[str, float]]:
    """Rank quantized Conv/Gemm/MatMul nodes by how much relative error appears across them.

    The error at each node's (dequantized) input is measured against the float model; the jump from a
    node's own input to the inputs of the next quantized nodes it feeds is charged to it.
    """
    from onnxslim.activations import TensorTap
    weighted = ("Conv", "Gemm", "MatMul", "ConvTranspose")
    qnodes = [n for n in qmodel.graph.node if n.op_type in weighted and n.name and n.name not in base_exclude]
    fnames = {n.name: n for n in prepared.graph.node}
    pairs = {}
    for n in qnodes:
        f = fnames.get(n.name)
        if f is not None:
            pairs[n.name] = (n.input[0], f.input[0])
    qtap = TensorTap(qmodel, sorted({q for q, _ in pairs.values()}))
    ftap = TensorTap(prepared, sorted({f for _, f in pairs.values()}))
    num, den = {}, {}
    for feed in feeds:
        qv, fv = qtap(feed), ftap(feed)
        for name, (qn, fn) in pairs.items():
            num[name] = num.get(name, 0.0) + float(((qv[qn].astype(np.float64) - fv[fn]) ** 2).sum())
            den[name] = den.get(name, 0.0) + float((fv[fn].astype(np.float64) ** 2).sum())
    err_in = {k: np.sqrt(num[k] / den[k]) if den[k] > 0 else 0.0 for k in num}
    # follow float edges from each quantized node to the next quantized nodes it feeds
    consumers = {}
    for node in prepared.graph.node:
        for x in node.input:
            consumers.setdefault(x, []).append(node)
    damage = {}
    for name in err_in:
        f = fnames[name]
        frontier, seen, nexts = list(f.output), set(), []
        while frontier:
            t = frontier.pop()
            for c in consumers.get(t, []):
                if c.name in seen:
                    continue
                seen.add(c.name)
                if c.name in err_in:
                    nexts.append(c.name)
                else:
                    frontier.extend(c.output)
        jump = max((err_in[c] for c in nexts), default=err_in[name] * 1.5) - err_in[name]
        damage[name] = max(jump, 0.0)
    return sorted(damage.items(), key=lambda kv: -kv[1])


def _measure(model, qmodel, feeds, config: QuantizeConfig, report: dict) -> None:
    names = [o.name for o in model.graph.output]
    ref = fidelity.outputs_on(model, feeds)
    simulated = config.mode == "int8" and config.target == "tensorrt"
    got = fidelity.outputs_on(qmodel, feeds, optimize=not simulated)
    report["fidelity"] = {"measured_on": f"{sum(len(next(iter(f.values()))) for f in feeds)} calibration samples",
                          "kernels": "QDQ simulation (what TensorRT computes)" if simulated else "onnxruntime CPU int8 kernels",
                          "outputs": fidelity.compare(ref, got, names)}
    report["size_ratio"] = round(qmodel.ByteSize() / max(model.ByteSize(), 1), 4)
    if simulated:
        report["latency"] = {"skipped": "TensorRT-target graph: onnxruntime CPU latency says nothing about TensorRT"}
    elif config.measure_latency:
        one = {k: v[:1] for k, v in feeds[0].items()}
        t_float = fidelity.latency(model, one, runs=config.latency_runs)
        t_int8 = fidelity.latency(qmodel, one, runs=config.latency_runs)
        report["latency"] = {"float_ms": round(t_float * 1e3, 3), "int8_ms": round(t_int8 * 1e3, 3),
                             "ratio": round(t_int8 / t_float, 4), "batch": 1, "threads": 1}
