"""Issue 12 (a refactor, behaviour unchanged): the same fixed-seed runs with two checkouts, then the output
models compared in onnxruntime and the terminal tables compared line by line (timings left out).

    python benchmarks/bench_same_behaviour.py run OUT_DIR [--code CHECKOUT] [--only NAME,NAME]   # once per checkout
    python benchmarks/bench_same_behaviour.py compare BASE_DIR NEW_DIR
    python benchmarks/bench_same_behaviour.py costs OUT.json                  # MACs/params/shapes per node

--code runs another checkout's code (its onnxslim/ with passes/ linked as onnxslim/passes) with this venv.
"""
from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent.parent / "shared" if (ROOT.parent.parent / "shared").exists() else ROOT.parent / "shared"
M, S, D = ROOT / "models", SHARED / "models", SHARED / "data"
IMAGES = ["--calib", str(D / "imagenet-dev"), "--calib-size", "16", "--resize", "256", "--crop", "224", "--mean", "127",
          "--std", "128", "--no-latency", "--no-data-check"]
RUNS = {
    "quickstart": [M / "digits_resnet_folded.onnx", "--target-macs", "0.5", "--calib", M / "digits_calib.npz", "--data", M / "digits_eval.npz"],
    "digits_int8": [M / "digits_resnet_folded.onnx", "--quantize", "int8", "--calib", M / "digits_calib.npz", "--data", M / "digits_eval.npz", "--no-latency"],
    "digits_prune_recon": [M / "digits_resnet_folded.onnx", "--target-macs", "0.6", "--importance", "reconstruction", "--allocation", "global",
                           "--calib", M / "digits_calib.npz", "--no-latency"],
    "digits_prune_q": [M / "digits_resnet_folded.onnx", "--prune", "0.3", "--quantize", "int8", "--calib", M / "digits_calib.npz", "--no-latency"],
    "eff_bare": [S / "efficientnet_lite0.onnx", "--no-latency"],
    "minilm_bare": [S / "minilm_l6.onnx", "--no-latency"],
    "eff_prune_calib": [S / "efficientnet_lite0.onnx", "--target-macs", "0.8", "--allocation", "global", *IMAGES],
    "eff_int8": [S / "efficientnet_lite0.onnx", "--quantize", "int8", *IMAGES],
    "minilm_lowrank": [S / "minilm_l6.onnx", "--lowrank", "0.9", "--no-latency"],
}
# issue 12 (session 7): the quantize modes, fallbacks and report paths the runs above miss; OUTDIR is the run's folder
RUNS.update({
    "int4_minilm": [S / "minilm_l6.onnx", "--quantize", "int4", "--no-latency"],
    "int4_minilm_tol": [S / "minilm_l6.onnx", "--quantize", "int4", "--tolerance", "0.02", "--no-latency"],
    "q8w_minilm": [S / "minilm_l6.onnx", "--quantize", "int8-weight", "--no-latency"],
    "q8dyn_minilm": [S / "minilm_l6.onnx", "--quantize", "int8-dynamic", "--no-latency"],
    "eff_int8_tol": [S / "efficientnet_lite0.onnx", "--quantize", "int8", "--tolerance", "0.05", *IMAGES],
    "eff_int8_trt": [S / "efficientnet_lite0.onnx", "--quantize", "int8", "--target", "tensorrt", "--calib-method", "entropy", *IMAGES],
    "eff_fp16": [S / "efficientnet_lite0.onnx", "--fp16", "--no-latency"],
    "eff_html": [S / "efficientnet_lite0.onnx", "--target-macs", "0.8", "--no-latency", "--report", "OUTDIR/eff.html"],
})


def run(out: Path, code: str | None, only: str | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", **({"PYTHONPATH": code} if code else {}))
    for name, args in RUNS.items():
        if only and name not in only.split(","):
            continue
        cmd = [sys.executable, "-m", "onnxslim.cli", str(args[0]), str(out / f"{name}.onnx"), *(str(a).replace("OUTDIR", str(out)) for a in args[1:])]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd="/")
        (out / f"{name}.txt").write_text(proc.stdout)
        print(name, proc.returncode, flush=True)


def compare(base: Path, new: Path) -> None:
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnxslim.inputs import random_feeds
    for name in RUNS:
        if not (base / f"{name}.onnx").exists() and not (new / f"{name}.onnx").exists():
            continue
        if not (base / f"{name}.onnx").exists() or not (new / f"{name}.onnx").exists():
            print(f"{name}: missing")
            continue
        a, b = onnx.load(base / f"{name}.onnx"), onnx.load(new / f"{name}.onnx")
        worst = 0.0
        for feed in random_feeds(a, {i.name: [d.dim_value or 16 for d in i.type.tensor_type.shape.dim] for i in a.graph.input}, count=2, seed=1):
            outs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed) for m in (a, b)]
            for x, y in zip(*outs):
                worst = max(worst, float(np.abs(x.astype(np.float64) - y).max() / max(np.abs(x).max(), 1e-12)))
        keep = lambda t: [l for l in t.splitlines() if not re.search(r"latency|total|wrote|ms\b", l)]  # noqa: E731
        same_text = keep((base / f"{name}.txt").read_text()) == keep((new / f"{name}.txt").read_text())
        identical = a.graph.SerializeToString() == b.graph.SerializeToString()
        print(f"{name:20s} graph identical {identical!s:5s}  max relative output difference {worst:.1e}  terminal same {same_text}")


def costs(out: Path) -> None:
    import onnx
    from onnxslim.cost import node_costs
    paths = sorted(glob.glob(str(M / "*.onnx"))) + sorted(glob.glob(str(S / "*.onnx")))
    paths += sorted(glob.glob(os.path.expanduser("~/.cache/onnxslim-bench/models/*.onnx")))
    result = {}
    for p in paths:
        if os.path.getsize(p) > 200e6:
            continue
        start = time.perf_counter()
        c = node_costs(onnx.load(p))
        result[Path(p).name] = {"macs": [x.macs for x in c], "params": [x.params for x in c],
                                "shapes": [list(x.output_shape) if x.output_shape else None for x in c],
                                "seconds": time.perf_counter() - start}
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "run":
        flags = dict(zip(sys.argv[3::2], sys.argv[4::2]))
        run(Path(sys.argv[2]), flags.get("--code"), flags.get("--only"))
    elif what == "compare":
        compare(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        costs(Path(sys.argv[2]))
