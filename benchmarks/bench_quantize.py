"""int8 quantization benchmark: EfficientNet-Lite0 on ImageNet samples and the digits ResNet.

One JSON line per result: top-1 of fp32, of onnxruntime's quantize_static (defaults, and per-channel) and of
each of our modes, with the int8/fp32 latency ratio at batch 1 (one thread, median). The first 64 images
(sorted file order) calibrate, the other 236 evaluate.

    python benchmarks/bench_quantize.py [--model ../shared/models/efficientnet_lite0.onnx]
        [--images ../shared/data/imagenet-dev] [--digits models/digits_resnet_folded.onnx]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnxslim.calibration import Preprocess, load_calibration  # noqa: E402
from onnxslim.context import Context  # noqa: E402
from onnxslim.passes.quantize import QuantizeConfig, run  # noqa: E402
from onnxslim.passes.quantize.fidelity import latency  # noqa: E402
from onnxslim.progress import silent  # noqa: E402

EFFICIENTNET_PREPROCESS = Preprocess(resize=256, crop=224, mean=(127.0,) * 3, std=(128.0,) * 3, scale=1.0, layout="NCHW", channels="RGB")
DEFAULT_MODES = "ours_minmax,ours_percentile,ours_entropy,ours_minmax_no_bias_correction,ours_minmax_tolerance_0.08,ours_tensorrt_minmax"
OUR_MODES = {
    "ours_minmax": dict(calib_method="minmax"),
    "ours_percentile": dict(calib_method="percentile"),
    "ours_entropy": dict(calib_method="entropy"),
    "ours_minmax_no_bias_correction": dict(calib_method="minmax", bias_correction=False),
    "ours_minmax_tolerance_0.08": dict(calib_method="minmax", tolerance=0.08),
    "ours_minmax_tolerance_0.09": dict(calib_method="minmax", tolerance=0.09),
    "ours_tensorrt_minmax": dict(calib_method="minmax", target="tensorrt"),
}


def emit(**kw):
    print(json.dumps(kw), flush=True)


def predict(model: onnx.ModelProto | str, x: np.ndarray, batch: int = 32, simulate: bool = False) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if simulate:  # QDQ arithmetic without onnxruntime's int8 kernel fusion (what TensorRT computes)
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    src = model if isinstance(model, str) else model.SerializeToString()
    s = ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def paired_latency(fmodel, qmodel, feed, rounds: int = 15, runs: int = 5) -> float:
    """int8/fp32 latency ratio at batch 1, one thread: the two sessions alternate so that load from other
    processes on the machine hits both alike; the median of the per-round ratios."""
    sessions = []
    for m in (fmodel, qmodel):
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = 1
        sessions.append(ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"]))
    for s in sessions:
        for _ in range(3):
            s.run(None, feed)
    ratios = []
    for _ in range(rounds):
        times = []
        for s in sessions:
            t = time.perf_counter()
            for _ in range(runs):
                s.run(None, feed)
            times.append(time.perf_counter() - t)
        ratios.append(times[1] / times[0])
    return float(np.median(ratios))


def ort_baseline(model_path: str, calib, per_channel: bool) -> onnx.ModelProto:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib.batches(8))

        def get_next(self):
            return next(self.it, None)

    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "q.onnx")
        quantize_static(model_path, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel)
        return onnx.load(out)


def bench(tag: str, model_path: str, calib, x_eval: np.ndarray, y_eval: np.ndarray, modes: dict, split: str):
    model = onnx.load(model_path)
    one = {calib.names[0]: x_eval[:1]}
    ref = predict(model, x_eval)
    fp32_top1 = float((ref.argmax(1) == y_eval).mean())
    t_float = latency(model, one, runs=30)
    emit(model=tag, variant="fp32", top1=round(fp32_top1 * 100, 2), latency_ms=round(t_float * 1e3, 2), split=split)

    def report_variant(variant, qmodel, seconds, extra=None, simulate=False):
        out = predict(qmodel, x_eval, simulate=simulate)
        t = float("nan") if simulate else paired_latency(model, qmodel, one)
        noise = float(((out - ref) ** 2).sum())
        emit(model=tag, variant=variant, top1=round(float((out.argmax(1) == y_eval).mean()) * 100, 2),
             top1_drop=round((fp32_top1 - float((out.argmax(1) == y_eval).mean())) * 100, 2),
             agreement_with_fp32=round(float((out.argmax(1) == ref.argmax(1)).mean()), 4),
             sqnr_db=round(10 * np.log10(float((ref ** 2).sum()) / noise), 2) if noise > 0 else None,
             latency_ratio=None if simulate else round(t, 3), size_ratio=round(qmodel.ByteSize() / model.ByteSize(), 3),
             quantize_seconds=round(seconds, 1), **(extra or {}))

    for variant, per_channel in (("ort_quantize_static_defaults", False), ("ort_quantize_static_per_channel", True)):
        t0 = time.time()
        q = ort_baseline(model_path, calib, per_channel)
        report_variant(variant, q, time.time() - t0)

    for variant, cfg in modes.items():
        t0 = time.time()
        result = run(model, QuantizeConfig(latency_runs=10, **cfg), Context(calibration=calib, progress=silent))
        rep = result.report
        extra = {"ranges_clipped_below_minmax": rep.get("ranges", {}).get("clipped_below_minmax"),
                 "reduce_range": rep.get("kernels", {}).get("reduce_range"),
                 "left_in_float_count": len(rep.get("left_in_float", [])),
                 "left_in_float": [e["node"] for e in rep.get("left_in_float", [])][:12],
                 "calib_sqnr_db": {k: v.get("sqnr_db") for k, v in rep["fidelity"]["outputs"].items()}}
        if "fallback" in rep:
            extra["fallback"] = {k: rep["fallback"].get(k) for k in ("tolerance", "error_before", "error_after", "met")}
        simulate = cfg.get("target") == "tensorrt"
        if simulate:
            extra["evaluated_as"] = "QDQ simulation (onnxruntime basic optimization level): the CPU int8 kernels are not TensorRT's"
        report_variant(variant, result.model, time.time() - t0, extra, simulate=simulate)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "../shared/models/efficientnet_lite0.onnx"))
    ap.add_argument("--images", default=str(ROOT / "../shared/data/imagenet-dev"))
    ap.add_argument("--digits", default=str(ROOT / "models/digits_resnet_folded.onnx"))
    ap.add_argument("--digits-calib", default=str(ROOT / "models/digits_calib.npz"))
    ap.add_argument("--digits-eval", default=str(ROOT / "models/digits_eval.npz"))
    ap.add_argument("--calib-size", type=int, default=64)
    ap.add_argument("--modes", default=DEFAULT_MODES, help="comma-separated subset of " + ",".join(OUR_MODES))
    ap.add_argument("--skip-efficientnet", action="store_true")
    ap.add_argument("--minilm", default=None, help="also run int8-dynamic on this model (e.g. ../shared/models/minilm_l6.onnx)")
    ap.add_argument("--minilm-tokens", default=str(ROOT / "../shared/data/sentences/minilm_tokens.npz"))
    args = ap.parse_args()
    ort.set_default_logger_severity(3)
    modes = {k: OUR_MODES[k] for k in args.modes.split(",") if k}

    if os.path.exists(args.digits):
        dmodel = onnx.load(args.digits)
        calib = load_calibration(args.digits_calib, dmodel)
        ev = np.load(args.digits_eval)
        bench("digits_resnet_folded", args.digits, calib, ev["input"], ev["labels"], modes,
              split=f"calibrate on {Path(args.digits_calib).name} ({len(calib)}), evaluate on {Path(args.digits_eval).name} ({len(ev['labels'])})")

    if args.minilm:
        mmodel = onnx.load(args.minilm)
        data = load_calibration(args.minilm_tokens, mmodel, size=64)
        t0 = time.time()
        result = run(mmodel, QuantizeConfig(mode="int8-dynamic", latency_runs=10), Context(calibration=data, progress=silent))
        rep = result.report
        emit(model="minilm_l6", variant="ours_int8_dynamic", quantize_seconds=round(time.time() - t0, 1),
             fidelity=rep["fidelity"]["outputs"], latency_ratio=rep["latency"]["ratio"], size_ratio=rep["size_ratio"],
             split="first 64 sentences, fidelity measured on the same 64 (dynamic mode needs no calibration)")

    if not args.skip_efficientnet:
        model = onnx.load(args.model)
        images = Path(args.images)
        calib = load_calibration(str(images), model, size=args.calib_size, preprocess=EFFICIENTNET_PREPROCESS)
        everything = load_calibration(str(images), model, preprocess=EFFICIENTNET_PREPROCESS)
        labels = {}
        for line in (images / "labels.tsv").read_text().splitlines()[1:]:
            name, cls = line.split("\t")[:2]
            labels[name] = int(cls)
        x = np.concatenate([b[everything.names[0]] for b in everything.batches(32)])[args.calib_size:]
        y = np.array([labels[f.name] for f in everything.files])[args.calib_size:]
        bench("efficientnet_lite0", args.model, calib, x, y, modes,
              split=f"first {args.calib_size} images (sorted) calibrate, other {len(y)} evaluate")


if __name__ == "__main__":
    main()
