"""Peak memory of calibrate + prune + repair does not grow with the number of calibration images (issue 3):
EfficientNet-Lite0, --target-macs 0.9, reconstruction importance, uniform allocation, repair on, with 64 and
with 512 calibration images streamed from an image folder (512 = the 300 shared images, repeated, as links in
a temporary folder). Each run in a fresh process; one JSON line per run.

    python benchmarks/bench_calib_memory.py [--sizes 64 512]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import imagenet  # noqa: E402

RUN = r'''
import json, os, resource, sys, time
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
from onnxslim.calibration import load_calibration
from onnxslim.context import Context
from onnxslim.graph import load_model
from onnxslim.passes import cleanup
from onnxslim.passes.prune import PruneConfig, run as prune
from onnxslim.progress import silent
sys.path.insert(0, sys.argv[3])
import imagenet
model = load_model(sys.argv[1])
clean = cleanup.run(model).model
data = load_calibration(sys.argv[2], model, preprocess=imagenet.EFFNET_PREPROCESS)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
result = prune(clean, PruneConfig(target_macs=0.9, importance="reconstruction", allocation="uniform", round_to=16),
               Context(calibration=data, progress=silent))
print(json.dumps({"images": len(data), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "peak_before_pruning_mb": round(base, 1), "seconds": round(time.perf_counter() - start, 1),
                  "loss_after_repair": result.report.get("fidelity", {}).get("after_repair", {}).get("loss")}))
'''


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 512])
    args = ap.parse_args()
    images = sorted(p for p in imagenet.DATA.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as folder:
            for i in range(size):
                src = images[i % len(images)]
                (Path(folder) / f"{i:04d}{src.suffix}").symlink_to(src)
            out = subprocess.run([sys.executable, "-c", RUN, str(imagenet.MODELS / "efficientnet_lite0.onnx"), folder,
                                  str(Path(__file__).resolve().parent)], capture_output=True, text=True)
            print(out.stdout.strip() or out.stderr.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
