"""Export torchvision's ViT-B/16 and Swin-T (random weights: the structure is what the head rules need) to
ONNX with the TorchScript exporter, opset 17, batch 1. Run with the torch venv (torch is never a run-time
dependency of onnxslim); the models go to the benchmark cache, never into the repo.

    <torch venv>/bin/python benchmarks/export_vit_swin.py ~/.cache/onnxslim-bench/models
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torchvision


def main():
    dest = Path(sys.argv[1]).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for name in sys.argv[2:] or ["vit_b_16", "swin_t"]:
        model = getattr(torchvision.models, name)(weights=None).eval()
        out = dest / f"torchvision__{name}.onnx"
        torch.onnx.export(model, (torch.rand(1, 3, 224, 224),), str(out), input_names=["image"], output_names=["logits"],
                          opset_version=17, dynamo=False)
        print("ok", name, out)


if __name__ == "__main__":
    main()
