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

from dataclasses import asdict

import onnx
import onnx.version_converter
from onnx import numpy_helper

from onnxslim.calibration import load_calibration
from onnxslim.context import Context, PassResult
from onnxslim.errors import SlimError
from onnxslim.graph import model_bytes, to_graph, to_model
from onnxslim.inputs import with_batch
from onnxslim.metrics import quantized_fidelity
from onnxslim.protocol import FLOAT32, FOLDED, NORMALIZED, Pass
from onnxslim.runtime import median_latency

from . import backend, bias_correction, equalize, fidelity, prepare, ranges, target, weight_only, weights
from .bias_correction import dequantized
from .config import FIDELITY_SAMPLES, WEIGHT_ONLY, QuantizeConfig


def run(model: onnx.ModelProto, config: QuantizeConfig | None = None, ctx: Context | None = None) -> PassResult:
    config = config or QuantizeConfig()
    ctx = ctx or Context()
    config.check()
    dataset = ctx.calibration
    if dataset is None:
        dataset = load_calibration(None, model, input_shapes=ctx.input_shapes, seed=ctx.seed, size=16)
    report = {"mode": config.mode, "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
              "calibration": dataset.describe()}
    if not dataset.real and config.mode == "int8-dynamic":
        # dynamic int8 computes activation ranges at run time: the data only feeds the fidelity figures
        report["note"] = "no calibration needed (ranges computed at run time); fidelity measured on random inputs"
    elif not dataset.real and config.mode in WEIGHT_ONLY and config.tolerance is None:
        report["note"] = "no calibration needed (weights alone); fidelity measured on random inputs"
    elif not dataset.real and config.mode in WEIGHT_ONLY:
        report["warning"] = "--tolerance measured on random data: which layers stay in float means little; pass real data (--calib)"
    elif not dataset.real:
        report["warning"] = "calibrated on random data: the ranges and accuracy numbers mean little; pass real data (--calib)"
    quantized = sorted({n.op_type for n in model.graph.node if n.op_type in _QUANTIZED_OPS})
    if config.mode == "int8" and quantized:
        # onnxruntime's static quantizer breaks on tensors it already quantized (name clashes): leave the model
        report["skipped"] = f"the model is already quantized ({', '.join(quantized)}); left as it was"
        return PassResult(model, report, modified=False)
    try:
        feeds = _fidelity_feeds(dataset, config.batch_size)
    except SlimError as err:
        if config.mode == "int8" or dataset.real:
            raise
        # dynamic and weight-only modes need no data: only their fidelity measurement does, and no size the
        # model runs with is known
        feeds, report["fidelity"] = None, {"skipped": str(err)}
    if config.mode in WEIGHT_ONLY:
        qmodel = weight_only.run(model, config, feeds, report)
    elif config.mode == "int8-dynamic":
        vnni = target.cpu_has_vnni()
        # measured on MiniLM without VNNI: 7-bit weights cost more (hidden state 14.6 -> 6.1 dB) than they save
        reduce_range = bool(config.reduce_range)
        report["kernels"] = {"cpu_vnni": vnni, "reduce_range": reduce_range}
        qmodel = backend.quantize_dynamic_int8(model, per_channel=config.per_channel, op_types=list(config.dynamic_op_types),
                                               reduce_range=reduce_range)
    else:
        qmodel = _static(model, config, ctx, dataset, feeds, report)
    if feeds is not None:
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
    """The exact float rewrites before placing Q/DQ (the pipeline ran cleanup first: QuantizePass.requires)."""
    model, upgraded = _opset_13(model)
    graph = to_graph(model)
    steps = {"pads_folded_into_conv": len(prepare.fold_pads(graph))}
    if upgraded:
        steps["opset_upgraded"] = upgraded
    if config.bias_correction:
        steps["zero_biases_added"] = len(prepare.add_zero_biases(graph))
    if config.cle:
        report["cle"] = equalize.equalize(graph, relu6_as_relu=config.cle_relu6_as_relu)
    report["prepare"] = steps
    return graph, to_model(graph, like=model)


_QUANTIZED_OPS = {"QuantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "QLinearConv",
                  "QLinearMatMul", "DynamicQuantizeLSTM", "MatMulIntegerToFloat"}


def _one_sample(model: onnx.ModelProto, feed: dict) -> dict:
    """The first sample of a batch: the batch dims (see inputs.with_batch: silero's state [2, batch, 128]) cut
    to 1; scalars and fixed dims as they are."""
    target = with_batch(model, {k: tuple(v.shape) for k, v in feed.items()}, 1)
    return {k: v[tuple(slice(0, t) for t in target[k])] if v.ndim else v for k, v in feed.items()}


def _opset_13(model: onnx.ModelProto):
    """Per-channel QDQ needs DequantizeLinear's `axis` (opset 13): older models (PaddleOCR's opset 11) are
    converted first; (model, "11 -> 13" or None). A model the converter cannot take stays as it is."""
    old = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    if old >= 13:
        return model, None
    try:
        return onnx.version_converter.convert_version(model, 13), f"{old} -> 13"
    except Exception:  # noqa: BLE001 - the converter's failures have no common type
        return model, None


def _static(model, config: QuantizeConfig, ctx: Context, dataset, feeds, report) -> onnx.ModelProto:
    graph, prepared = _prepare(model, config, report)
    vnni = target.cpu_has_vnni()
    reduce_range = config.target == "onnxruntime" and vnni is False if config.reduce_range is None else config.reduce_range
    report["kernels"] = {"cpu_vnni": vnni, "reduce_range": reduce_range,
                         "why": "7-bit weights (depthwise convs excepted) keep u8*s8 products from saturating int16 on CPUs without VNNI" if reduce_range else None}
    # 7-bit weights go per layer through the overrides (depthwise kernels do not saturate), not globally
    settings = target.settings_for(config.target, config.per_channel, reduce_range and not config.per_channel)
    excluded = target.tensorrt_float_convs(graph) if config.target == "tensorrt" else []
    report["left_in_float"] = list(excluded)
    base_exclude = [e["node"] for e in excluded]
    names = backend.float_activations(prepared)
    channel_axis = {"Conv": 1, "Gemm": -1}  # of the layer inputs whose means bias correction needs
    mean_axes = {n.input[0]: channel_axis[n.op_type] for n in prepared.graph.node
                 if n.op_type in channel_axis and config.bias_correction}
    stats = ranges.collect(prepared, names, dataset, histogram=config.calib_method != "minmax",
                           batch_size=config.batch_size, mean_axes=mean_axes, progress=ctx.progress)
    act_ranges = ranges.ranges_from_stats(stats, config.calib_method, symmetric=settings.activation_symmetric,
                                          percentile=config.percentile)
    clipped = [n for n in act_ranges if stats[n].absmax > 0 and max(abs(v) for v in act_ranges[n]) < 0.999 * stats[n].absmax]
    report["ranges"] = {"method": config.calib_method, "tensors": len(act_ranges), "clipped_below_minmax": len(clipped)}
    # without VNNI every Conv/Gemm weight but the depthwise ones gets 7 bits (see weights.py); a 7-bit input
    # activation instead was tried and still saturates in onnxruntime's AVX2 kernels
    seven_weights = {n.name for n in prepared.graph.node if n.name not in set(config.eight_bit_nodes)} if reduce_range and config.per_channel else set()
    w_overrides, report["weights"] = weights.overrides(prepared, per_channel=config.per_channel, seven_bit_nodes=seven_weights,
                                                       mse=config.weight_mse, exclude=set(base_exclude))
    one = _one_sample(model, feeds[0])
    means = {n: s.channel_mean for n, s in stats.items() if s.channel_mean is not None}

    def build(exclude: list[str]) -> onnx.ModelProto:
        q = backend.quantize_qdq(prepared, act_ranges, one, settings, nodes_to_exclude=exclude, weight_overrides=w_overrides)
        if config.bias_correction:
            report["bias_correction"] = bias_correction.correct(q, prepared, means)
        return q

    qmodel = build(base_exclude)
    if config.tolerance is not None:
        qmodel = _fallback(model, prepared, qmodel, build, base_exclude, feeds, config, report)
    return qmodel


def _fallback(model, prepared, qmodel, build, base_exclude, feeds, config, report) -> onnx.ModelProto:
    """Keep the nodes that add the most error in float (fidelity.fallback_search), as few as meet the tolerance."""
    ref = fidelity.outputs(model, feeds)
    names = [o.name for o in model.graph.output]
    optimize = config.target != "tensorrt"
    error = fidelity.error(ref, qmodel, feeds, names, optimize)
    entry = fidelity.fallback_entry(report, config.tolerance, error)
    if entry["met"]:
        return qmodel
    ranking = _sensitivity(prepared, qmodel, feeds[:2], base_exclude)

    def measure(chosen):
        candidate = build(base_exclude + chosen)
        return fidelity.error(ref, candidate, feeds, names, optimize), candidate

    top = min(config.max_fallback_nodes or len(ranking), len(ranking))
    _, qmodel, chosen = fidelity.fallback_search(entry, ranking, measure, config.tolerance, top=top, base=(error, qmodel, []), digits=5)
    report["left_in_float"] += [{"node": n, "reason": "accuracy fallback (--tolerance)"} for n in chosen]
    return qmodel


def _sensitivity(prepared, qmodel, feeds, base_exclude) -> list[tuple[str, float]]:
    """Rank the quantized Conv/Gemm nodes by the output error each causes alone.

    For every node, the float model gets that node's weights replaced by the int8 weights onnxruntime
    produced (dequantized), and the relative output error on a few calibration batches is measured: a
    direct per-node measurement rather than a proxy, one float inference per node.
    """
    inits = {i.name: i for i in qmodel.graph.initializer}
    producers = {o: n for n in qmodel.graph.node for o in n.output}
    fnodes = {n.name: n for n in prepared.graph.node if n.name}
    names = [o.name for o in prepared.graph.output]
    ref = fidelity.outputs(prepared, feeds)
    ranking = []
    for node in qmodel.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or node.name in base_exclude or node.name not in fnodes:
            continue
        dq = producers.get(node.input[1]) if len(node.input) > 1 else None
        wq = dequantized(dq, inits) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if wq is None:
            continue
        trial = onnx.ModelProto()
        trial.CopyFrom(prepared)
        wname = fnodes[node.name].input[1]
        for init in trial.graph.initializer:
            if init.name == wname:
                init.CopyFrom(numpy_helper.from_array(wq.astype(numpy_helper.to_array(init).dtype), wname))
        err = fidelity.error(ref, trial, feeds, names)
        ranking.append((node.name, float(err)))
    return sorted(ranking, key=lambda kv: -kv[1])


def _measure(model, qmodel, feeds, config: QuantizeConfig, report: dict) -> None:
    names = [o.name for o in model.graph.output]
    ref = fidelity.outputs(model, feeds)
    simulated = config.mode == "int8" and config.target == "tensorrt"
    got = fidelity.outputs(qmodel, feeds, optimize=not simulated)
    report["fidelity"] = {"measured_on": f"{sum(len(next(iter(f.values()))) for f in feeds)} calibration samples",
                          "kernels": "QDQ simulation (what TensorRT computes)" if simulated else "onnxruntime CPU int8 kernels",
                          "outputs": quantized_fidelity(ref, got, names)}
    report["size_ratio"] = round(model_bytes(qmodel) / max(model_bytes(model), 1), 4)
    if simulated:
        report["latency"] = {"skipped": "TensorRT-target graph: onnxruntime CPU latency says nothing about TensorRT"}
    elif config.measure_latency:
        inputs = {i.name for i in model.graph.input}
        one = {k: v for k, v in _one_sample(model, feeds[0]).items() if k in inputs}
        t_float, t_int8 = (median_latency(m, one, runs=config.latency_runs, threads=1, budget_s=float("inf")) for m in (model, qmodel))
        report["latency"] = {"float_ms": round(t_float * 1e3, 3), "quantized_ms": round(t_int8 * 1e3, 3),
                             "ratio": round(t_int8 / t_float, 4), "batch": 1, "threads": 1}


class QuantizePass(Pass):
    name = "quantize"
    config = QuantizeConfig

    def requires(self, config) -> set[str]:
        # static int8 places Q/DQ on weights that must be initializers with nothing left to fold: after
        # prune or low-rank the pipeline runs cleanup again (their edits can leave foldable nodes)
        return {FOLDED, FLOAT32} if config.mode == "int8" else {NORMALIZED, FLOAT32}

    def wants_calibration(self, config) -> bool:
        return config.mode == "int8"  # dynamic int8 and weight-only need none (ranges at run time, weights alone)

    run = staticmethod(run)  # the module's run(model, config, ctx)

    def weights_on_disk(self, config) -> bool:
        return config.mode in WEIGHT_ONLY  # reads one weight at a time (weight_only.py)

    def summary(self, quantize: dict) -> list[str]:
        floats = quantize.get("left_in_float", [])
        method, target = quantize.get("config", {}).get("calib_method"), quantize.get("config", {}).get("target")
        if quantize.get("mode") == "int8-dynamic":  # no calibration method applies: ranges come at run time
            method = "activations at run time"
        wo = quantize.get("weight_only")
        how = f"{wo['bits']}-bit blocks of {wo['block_size']}, {len(wo.get('quantized', []))} weights" if wo else f"{method}, for {target}"
        lines = [f"quantize: {quantize.get('mode')} ({how}); {len(floats)} nodes left in float"]
        lines += [f"  float: {f.get('node')}: {f.get('reason')}" for f in floats[:4]]
        return lines + [f"  {key}: {quantize[key]}" for key in ("skipped", "warning") if quantize.get(key)]


PASS = QuantizePass()
