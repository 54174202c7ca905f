"""Train a small ResNet-style CNN on scikit-learn's digits and export it to ONNX.

Outputs (next to this file):
  digits_resnet.onnx         BatchNormalization nodes kept (eval semantics)
  digits_resnet_folded.onnx  BN folded into Conv (the default eval export)
  digits_calib.npz           128 training images (`input`) + `labels`
  digits_eval.npz            all test images (`input`) + `labels` (int64)

Run from the repo root:  python models/train_digits.py
Deterministic: fixed seed, single thread, fixed split (last 30% of the dataset is the test set).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
from sklearn.datasets import load_digits

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 0
OPSET = 17
TEST_FRACTION = 0.3
EPOCHS = 40
CALIB_SIZE = 128


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN + identity (or 1x1 conv-BN projection when the shape changes), then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.shortcut(x))


class DigitsResNet(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.layer1 = BasicBlock(32, 32)          # identity shortcut, 8x8
        self.layer2 = BasicBlock(32, 64, stride=2)  # 1x1 projection shortcut, 4x4
        self.layer3 = BasicBlock(64, 64)          # identity shortcut, 4x4
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def load_split():
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]  # pixels are 0..16
    y = digits.target.astype(np.int64)
    n_test = int(round(len(x) * TEST_FRACTION))
    n_train = len(x) - n_test
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def random_shift(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Shift each image by up to one pixel (zero fill): cheap augmentation that helps on 8x8 digits."""
    padded = nn.functional.pad(xb, (1, 1, 1, 1))
    out = torch.empty_like(xb)
    offsets = torch.randint(0, 3, (xb.shape[0], 2), generator=gen)
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy:dy + 8, dx:dx + 8]
    return out


def train(model: nn.Module, x_train: np.ndarray, y_train: np.ndarray) -> None:
    gen = torch.Generator().manual_seed(SEED)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps_per_epoch = (len(xt) + 63) // 64
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=EPOCHS * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for epoch in range(EPOCHS):
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            xb = random_shift(xt[idx], gen)
            loss = loss_fn(model(xb), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if epoch % 10 == 9 or epoch == EPOCHS - 1:
            print(f"epoch {epoch + 1}: train loss {total / len(xt):.4f}")
    model.eval()


def export(model: nn.Module, path: str, keep_bn: bool) -> None:
    dummy = torch.zeros(2, 1, 8, 8)
    kwargs = dict(
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )
    if keep_bn:
        # PRESERVE keeps the model's own (eval) mode but skips the eval peephole that fuses BN into Conv.
        kwargs["training"] = torch.onnx.TrainingMode.PRESERVE
    torch.onnx.export(model, (dummy,), path, **kwargs)
    onnx.checker.check_model(onnx.load(path))


def count_ops(path: str) -> dict:
    counts: dict = {}
    for node in onnx.load(path).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def ort_logits(path: str, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"input": x})[0]


def main() -> int:
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.set_num_threads(1)
    x_train, y_train, x_test, y_test = load_split()
    print(f"train {len(x_train)}, test {len(x_test)}")

    model = DigitsResNet()
    train(model, x_train, y_train)
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(x_test)).numpy()
    torch_acc = float((torch_logits.argmax(1) == y_test).mean())
    print(f"torch test accuracy: {torch_acc:.4f}")

    outputs = {
        "digits_resnet.onnx": True,
        "digits_resnet_folded.onnx": False,
    }
    accuracies = {}
    for name, keep_bn in outputs.items():
        path = os.path.join(HERE, name)
        export(model, path, keep_bn)
        ops = count_ops(path)
        has_bn = ops.get("BatchNormalization", 0)
        if keep_bn != bool(has_bn):
            raise SystemExit(f"{name}: expected BatchNormalization kept={keep_bn}, ops={ops}")
        logits = ort_logits(path, x_test)
        max_diff = float(np.abs(logits - torch_logits).max())
        if max_diff > 1e-4:
            raise SystemExit(f"{name}: onnxruntime differs from torch by {max_diff}")
        acc = float((logits.argmax(1) == y_test).mean())
        accuracies[name] = acc
        print(f"{name}: ops {ops}; max|ort-torch| {max_diff:.2e}; test accuracy {acc:.4f}; "
              f"{os.path.getsize(path)} bytes")

    np.savez(os.path.join(HERE, "digits_calib.npz"),
             input=x_train[:CALIB_SIZE], labels=y_train[:CALIB_SIZE])
    np.savez(os.path.join(HERE, "digits_eval.npz"), input=x_test, labels=y_test)

    if min(accuracies.values()) < 0.97:
        print(f"accuracy below 97%: {accuracies}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
