"""Speed and memory of analysis + pruning on a ResNet-50-sized graph (issue 2 goal: < 5 s on 2 cores,
peak memory < 3x the model's size). One JSON line per step.

    python benchmarks/bench_analysis_speed.py

Builds a ResNet-50 (torchvision layout, random weights: speed does not depend on their values) with torch
into benchmarks/out/resnet50.onnx, then measures in a fresh subprocess so imports do not count.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"

MEASURE = r'''
import json, resource, sys, time
import numpy as np, onnx
from onnxslim.graph import load_model
from onnxslim.passes import cleanup
from onnxslim.channels import analyze_graph
from onnxslim.graph import to_graph, infer_shapes
from onnxslim.passes.prune import PruneConfig, run as prune

def rss_mb():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024

path = sys.argv[1]
base = rss_mb()
t = time.perf_counter(); model = load_model(path); t_load = time.perf_counter() - t
size_mb = model.ByteSize() / 2**20
t = time.perf_counter(); clean = cleanup.run(model).model; t_clean = time.perf_counter() - t
t = time.perf_counter(); analysis = analyze_graph(to_graph(infer_shapes(clean))); t_analyze = time.perf_counter() - t
results = {"model_mb": round(size_mb, 1), "load_s": round(t_load, 2), "cleanup_s": round(t_clean, 2),
           "analyze_s": round(t_analyze, 2), "groups": len(analysis.groups), "prunable_groups": len(analysis.prunable_groups)}
for name, cfg in (("prune_ratio_0.3", PruneConfig(ratio=0.3)), ("prune_target_macs_0.5", PruneConfig(target_macs=0.5))):
    t = time.perf_counter(); prune(clean, cfg); results[name + "_s"] = round(time.perf_counter() - t, 2)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
results["peak_rss_mb"] = round(peak, 1)
results["rss_before_load_mb"] = round(base, 1)
results["peak_over_model_size"] = round((peak - base) / size_mb, 2)
print(json.dumps(results))
'''


def build_resnet50(path: Path) -> None:
    import torch
    from torch import nn

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            cout = width * 4
            self.body = nn.Sequential(
                nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))
            self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                          if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x):
            return torch.relu(self.body(x) + self.short(x))

    layers, cin = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)], 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            layers.append(Bottleneck(cin, width, stride if i == 0 else 1))
            cin = width * 4
    net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2048, 1000)).eval()
    torch.onnx.export(net, torch.randn(1, 3, 224, 224), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "resnet50.onnx"
    if not path.exists():
        build_resnet50(path)
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, check=True)
    print(out.stdout.strip())


if __name__ == "__main__":
    main()
