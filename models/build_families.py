"""Build tiny, randomly initialised but structurally faithful models of common architecture families.

Each model is exported to models/families/<name>.onnx with the legacy TorchScript exporter (opset 17,
input `input`, dynamic batch axis, default eval export so BatchNorm that follows a Conv is folded into
it). `resnet_basic_bn.onnx` is the same network as `resnet_basic.onnx` with BatchNormalization kept.
The weights are random (fixed seed); BatchNorm/LayerNorm parameters and running statistics are
randomised too so that folding them is not a no-op. Every export is checked against torch in
onnxruntime.

Run from the repo root:  python models/build_families.py [name ...]
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.join(HERE, "families")
SEED = 0
OPSET = 17
TOLERANCE = 1e-4
NUM_CLASSES = 10


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: nn.Module | None = None):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act)
    return nn.Sequential(*layers)


# ---------------------------------------------------------------- ResNet (He et al. 2016)

class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = conv_bn(cin, cout, 1, stride)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(y + identity)


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride, as in torchvision's ResNet v1.5) -> 1x1 expand."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv_bn(cin, mid, 1, act=nn.ReLU())
        self.conv2 = conv_bn(mid, mid, 3, stride, act=nn.ReLU())
        self.conv3 = conv_bn(mid, cout, 1)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = conv_bn(cin, cout, 1, stride)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + identity)


class ResNet(nn.Module):
    def __init__(self, blocks: list[nn.Module], stem_out: int, feat: int):
        super().__init__()
        self.stem = conv_bn(3, stem_out, 3, act=nn.ReLU())
        self.layers = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(feat, NUM_CLASSES)

    def forward(self, x):
        x = self.avgpool(self.layers(self.stem(x)))
        return self.fc(torch.flatten(x, 1))


def resnet_basic():
    blocks = [BasicBlock(16, 16), BasicBlock(16, 32, 2), BasicBlock(32, 48, 2)]
    return ResNet(blocks, 16, 48)


def resnet_bottleneck():
    blocks = [Bottleneck(16, 8, 32), Bottleneck(32, 8, 32), Bottleneck(32, 16, 64, 2), Bottleneck(64, 16, 64)]
    return ResNet(blocks, 16, 64)


# ---------------------------------------------------------------- VGG (Simonyan & Zisserman 2014)

class VGG(nn.Module):
    """Plain conv stack; the classifier flattens the [C,4,4] map straight into a Gemm (no global pool)."""

    def __init__(self):
        super().__init__()
        cfg = [8, 8, "M", 16, 16, "M", 32, 32, "M"]
        layers, cin = [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(32 * 4 * 4, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, NUM_CLASSES))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


# ---------------------------------------------------------------- MobileNetV2 (Sandler et al. 2018)

class InvertedResidualV2(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn(cin, hidden, 1, act=nn.ReLU6()))
        layers += [
            conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6()),  # depthwise
            conv_bn(hidden, cout, 1),  # linear bottleneck: no activation
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self):
        super().__init__()
        blocks = [
            conv_bn(3, 16, 3, 2, act=nn.ReLU6()),
            InvertedResidualV2(16, 8, 1, 1),
            InvertedResidualV2(8, 16, 2, 4),
            InvertedResidualV2(16, 16, 1, 4),
            InvertedResidualV2(16, 24, 2, 4),
            InvertedResidualV2(24, 24, 1, 4),
            conv_bn(24, 64, 1, act=nn.ReLU6()),
        ]
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, NUM_CLASSES))

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


# ---------------------------------------------------------------- MobileNetV3 (Howard et al. 2019)

class SqueezeExcite(nn.Module):
    """Global pool -> 1x1 reduce -> act -> 1x1 expand -> gate -> scale the input channels."""

    def __init__(self, channels: int, squeeze: int, act: type[nn.Module], gate: type[nn.Module]):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.act = act()
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = gate()

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class InvertedResidualV3(nn.Module):
    def __init__(self, cin: int, k: int, hidden: int, cout: int, use_se: bool, act: type[nn.Module], stride: int):
        super().__init__()
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if hidden != cin:
            layers.append(conv_bn(cin, hidden, 1, act=act()))
        layers.append(conv_bn(hidden, hidden, k, stride, groups=hidden, act=act()))
        if use_se:
            squeeze = max(8, (hidden // 4 + 4) // 8 * 8)
            layers.append(SqueezeExcite(hidden, squeeze, nn.ReLU, nn.Hardsigmoid))
        layers.append(conv_bn(hidden, cout, 1))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.block(x) if self.use_res else self.block(x)


class MobileNetV3(nn.Module):
    def __init__(self):
        super().__init__()
        HS, RE = nn.Hardswish, nn.ReLU
        self.features = nn.Sequential(
            conv_bn(3, 16, 3, 2, act=nn.Hardswish()),
            InvertedResidualV3(16, 3, 16, 16, True, RE, 2),
            InvertedResidualV3(16, 3, 48, 24, False, RE, 2),
            InvertedResidualV3(24, 3, 64, 24, False, RE, 1),
            InvertedResidualV3(24, 5, 64, 32, True, HS, 1),
            InvertedResidualV3(32, 5, 96, 32, True, HS, 1),
            conv_bn(32, 96, 1, act=nn.Hardswish()),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(96, 128), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(128, NUM_CLASSES))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# ---------------------------------------------------------------- EfficientNet (Tan & Le 2019)

class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn(cin, hidden, 1, act=nn.SiLU()))
        layers.append(conv_bn(hidden, hidden, k, stride, groups=hidden, act=nn.SiLU()))
        layers.append(SqueezeExcite(hidden, max(1, cin // 4), nn.SiLU, nn.Sigmoid))  # se_ratio 0.25 of cin
        layers.append(conv_bn(hidden, cout, 1))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.block(x) if self.use_res else self.block(x)  # stochastic depth is identity in eval


class EfficientNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(3, 16, 3, 2, act=nn.SiLU()),
            MBConv(16, 8, 3, 1, 1),
            MBConv(8, 16, 3, 2, 6),
            MBConv(16, 16, 3, 1, 6),
            MBConv(16, 24, 5, 2, 6),
            MBConv(24, 24, 5, 1, 6),
            conv_bn(24, 96, 1, act=nn.SiLU()),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(96, NUM_CLASSES))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


# ---------------------------------------------------------------- DenseNet (Huang et al. 2017)

class DenseLayer(nn.Module):
    """Pre-activation: BN-ReLU-Conv1x1(4g)-BN-ReLU-Conv3x3(g) on the concat of all earlier features."""

    def __init__(self, cin: int, growth: int, bn_size: int = 4):
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False)

    def forward(self, features: list[torch.Tensor]):
        x = torch.cat(features, 1)
        x = self.conv1(F.relu(self.norm1(x)))
        return self.conv2(F.relu(self.norm2(x)))


class DenseBlock(nn.Module):
    def __init__(self, n_layers: int, cin: int, growth: int):
        super().__init__()
        self.layers = nn.ModuleList(DenseLayer(cin + i * growth, growth) for i in range(n_layers))

    def forward(self, x):
        features = [x]
        for layer in self.layers:
            features.append(layer(features))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False), nn.AvgPool2d(2, 2))


class DenseNet(nn.Module):
    def __init__(self, growth: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(3, 16, 3, act=nn.ReLU()),
            nn.MaxPool2d(2, 2),
            DenseBlock(3, 16, growth),   # 16 + 3*8 = 40
            Transition(40, 20),
            DenseBlock(3, 20, growth),   # 20 + 3*8 = 44
            nn.BatchNorm2d(44),
        )
        self.classifier = nn.Linear(44, NUM_CLASSES)

    def forward(self, x):
        x = F.relu(self.features(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ---------------------------------------------------------------- Inception / GoogLeNet (Szegedy et al. 2015)

class InceptionModule(nn.Module):
    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, pool_proj: int):
        super().__init__()
        relu = nn.ReLU
        self.branch1 = conv_bn(cin, c1, 1, act=relu())
        self.branch2 = nn.Sequential(conv_bn(cin, c3r, 1, act=relu()), conv_bn(c3r, c3, 3, act=relu()))
        self.branch3 = nn.Sequential(conv_bn(cin, c5r, 1, act=relu()), conv_bn(c5r, c5, 5, act=relu()))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn(cin, pool_proj, 1, act=relu()))

    def forward(self, x):
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class Inception(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16, 3, act=nn.ReLU()), nn.MaxPool2d(3, 2, 1))
        self.inc3a = InceptionModule(16, 8, 8, 16, 4, 8, 8)     # -> 40
        self.inc3b = InceptionModule(40, 16, 16, 24, 4, 8, 8)   # -> 56
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.inc4a = InceptionModule(56, 16, 8, 24, 4, 8, 16)   # -> 64
        self.fc = nn.Linear(64, NUM_CLASSES)

    def forward(self, x):
        x = self.inc4a(self.pool(self.inc3b(self.inc3a(self.stem(x)))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ---------------------------------------------------------------- SqueezeNet 1.1 (Iandola et al. 2016)

class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, e1: int, e3: int):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, e1, 1)
        self.expand3x3 = nn.Conv2d(squeeze, e3, 3, padding=1)

    def forward(self, x):
        s = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(s)), F.relu(self.expand3x3(s))], 1)


class SqueezeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(32, 8, 16, 16), Fire(32, 8, 16, 16),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(32, 16, 32, 32), Fire(64, 16, 32, 32),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Conv2d(64, NUM_CLASSES, 1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1))

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


# ---------------------------------------------------------------- ShuffleNetV2 (Ma et al. 2018)

def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    batch, channels, height, width = x.size()
    x = x.view(batch, groups, channels // groups, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batch, -1, height, width)


class ShuffleUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                conv_bn(cin, cin, 3, stride, groups=cin), conv_bn(cin, half, 1, act=nn.ReLU()))
        b2_in = cin if stride > 1 else half
        self.branch2 = nn.Sequential(
            conv_bn(b2_in, half, 1, act=nn.ReLU()),
            conv_bn(half, half, 3, stride, groups=half),
            conv_bn(half, half, 1, act=nn.ReLU()),
        )

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = conv_bn(3, 16, 3, 2, act=nn.ReLU())
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.stage2 = nn.Sequential(ShuffleUnit(16, 32, 2), ShuffleUnit(32, 32, 1))
        self.stage3 = nn.Sequential(ShuffleUnit(32, 64, 2), ShuffleUnit(64, 64, 1), ShuffleUnit(64, 64, 1))
        self.conv5 = conv_bn(64, 128, 1, act=nn.ReLU())
        self.fc = nn.Linear(128, NUM_CLASSES)

    def forward(self, x):
        x = self.conv5(self.stage3(self.stage2(self.maxpool(self.conv1(x)))))
        return self.fc(x.mean([2, 3]))


# ---------------------------------------------------------------- RegNetY (Radosavovic et al. 2020)

class RegNetBlock(nn.Module):
    """1x1 -> grouped 3x3 (group width 8) -> SE -> 1x1, projection shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int, group_width: int = 8, se_ratio: float = 0.25):
        super().__init__()
        self.a = conv_bn(cin, cout, 1, act=nn.ReLU())
        self.b = conv_bn(cout, cout, 3, stride, groups=cout // group_width, act=nn.ReLU())
        self.se = SqueezeExcite(cout, max(1, int(round(cin * se_ratio))), nn.ReLU, nn.Sigmoid)
        self.c = conv_bn(cout, cout, 1)
        self.proj = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x):
        identity = x if self.proj is None else self.proj(x)
        return F.relu(self.c(self.se(self.b(self.a(x)))) + identity)


class RegNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2, act=nn.ReLU())
        self.trunk = nn.Sequential(
            RegNetBlock(16, 24, 2), RegNetBlock(24, 24, 1),
            RegNetBlock(24, 56, 2), RegNetBlock(56, 56, 1),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(56, NUM_CLASSES)

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.trunk(self.stem(x))), 1))


# ---------------------------------------------------------------- U-Net (Ronneberger et al. 2015)

def double_conv(cin: int, cout: int):
    return nn.Sequential(conv_bn(cin, cout, 3, act=nn.ReLU()), conv_bn(cout, cout, 3, act=nn.ReLU()))


class UNet(nn.Module):
    def __init__(self, classes: int = 3):
        super().__init__()
        self.enc1 = double_conv(3, 8)      # 32x32
        self.enc2 = double_conv(8, 16)     # 16x16
        self.bottom = double_conv(16, 32)  # 8x8
        self.up2 = nn.ConvTranspose2d(32, 16, 2, stride=2)
        self.dec2 = double_conv(32, 16)
        self.up1 = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.dec1 = double_conv(16, 8)
        self.head = nn.Conv2d(8, classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        b = self.bottom(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.head(d1)


# ---------------------------------------------------------------- YOLO-style CSP backbone + PAN neck

def conv_silu(cin: int, cout: int, k: int = 1, stride: int = 1):
    return conv_bn(cin, cout, k, stride, act=nn.SiLU())


class CSPBottleneck(nn.Module):
    def __init__(self, c: int, shortcut: bool = True):
        super().__init__()
        self.cv1 = conv_silu(c, c, 3)
        self.cv2 = conv_silu(c, c, 3)
        self.add = shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """cv1 -> chunk into two halves -> n bottlenecks on the last piece -> Concat all pieces -> cv2."""

    def __init__(self, cin: int, cout: int, n: int = 1, shortcut: bool = True):
        super().__init__()
        self.c = cout // 2
        self.cv1 = conv_silu(cin, 2 * self.c, 1)
        self.cv2 = conv_silu((2 + n) * self.c, cout, 1)
        self.m = nn.ModuleList(CSPBottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).chunk(2, 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        hidden = cin // 2
        self.cv1 = conv_silu(cin, hidden, 1)
        self.cv2 = conv_silu(hidden * 4, cout, 1)
        self.pool = nn.MaxPool2d(5, 1, 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.pool(x)
        y2 = self.pool(y1)
        return self.cv2(torch.cat([x, y1, y2, self.pool(y2)], 1))


class YoloNeck(nn.Module):
    """Backbone P3 (8x8), P4 (4x4), P5 (2x2); PAN neck; raw detection maps for strides 4 and 8."""

    def __init__(self, anchors: int = 3, classes: int = 3):
        super().__init__()
        out = anchors * (5 + classes)
        self.stem = nn.Sequential(conv_silu(3, 8, 3, 2), conv_silu(8, 16, 3, 2), C2f(16, 16))
        self.down4 = nn.Sequential(conv_silu(16, 32, 3, 2), C2f(32, 32))
        self.down5 = nn.Sequential(conv_silu(32, 32, 3, 2), C2f(32, 32), SPPF(32, 32))
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.top4 = C2f(32 + 32, 32, shortcut=False)
        self.top3 = C2f(32 + 16, 16, shortcut=False)
        self.down_n3 = conv_silu(16, 16, 3, 2)
        self.bottom4 = C2f(16 + 32, 32, shortcut=False)
        self.head3 = nn.Sequential(conv_silu(16, 16, 3), nn.Conv2d(16, out, 1))
        self.head4 = nn.Sequential(conv_silu(32, 32, 3), nn.Conv2d(32, out, 1))

    def forward(self, x):
        p3 = self.stem(x)
        p4 = self.down4(p3)
        p5 = self.down5(p4)
        t4 = self.top4(torch.cat([self.up(p5), p4], 1))
        n3 = self.top3(torch.cat([self.up(t4), p3], 1))
        n4 = self.bottom4(torch.cat([self.down_n3(n3), t4], 1))
        return self.head3(n3), self.head4(n4)


# ---------------------------------------------------------------- Transformer encoder (pre-LN)

class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x):
        batch, tokens, dim = x.shape

        def split_heads(t):
            return t.view(batch, tokens, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split_heads(self.q(x)), split_heads(self.k(x)), split_heads(self.v(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) / (self.head_dim ** 0.5)
        context = torch.matmul(torch.softmax(scores, dim=-1), v)
        return self.out(context.transpose(1, 2).reshape(batch, tokens, dim))


class EncoderLayer(nn.Module):
    def __init__(self, dim: int = 64, heads: int = 4, ffn: int = 256):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.GELU(), nn.Linear(ffn, dim))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.ffn(self.ln2(x))


class Transformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(EncoderLayer(), EncoderLayer())
        self.norm = nn.LayerNorm(64)

    def forward(self, x):
        return self.norm(self.layers(x))


# ---------------------------------------------------------------- registry, export, check

@dataclass(frozen=True)
class Family:
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...] = (3, 32, 32)  # without the batch axis
    outputs: tuple[str, ...] = ("logits",)


FAMILIES: dict[str, Family] = {
    "resnet_basic": Family(resnet_basic),
    "resnet_bottleneck": Family(resnet_bottleneck),
    "vgg": Family(VGG),
    "mobilenetv2": Family(MobileNetV2),
    "mobilenetv3": Family(MobileNetV3),
    "efficientnet": Family(EfficientNet),
    "densenet": Family(DenseNet),
    "inception": Family(Inception),
    "squeezenet": Family(SqueezeNet),
    "shufflenetv2": Family(ShuffleNetV2),
    "regnet": Family(RegNet),
    "unet": Family(UNet, outputs=("segmentation",)),
    "yolo_neck": Family(YoloNeck, outputs=("det_stride4", "det_stride8")),
    "transformer": Family(Transformer, input_shape=(16, 64), outputs=("output",)),
}


def randomize_norms(model: nn.Module, gen: torch.Generator) -> None:
    """Give norm layers non-trivial affine params and running stats so folding them changes weights."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))


def export(model: nn.Module, family: Family, path: str, keep_bn: bool = False) -> None:
    dummy = torch.randn(2, *family.input_shape)
    dynamic = {name: {0: "batch"} for name in ("input",) + family.outputs}
    kwargs = dict(input_names=["input"], output_names=list(family.outputs), dynamic_axes=dynamic,
                  opset_version=OPSET, dynamo=False)
    if keep_bn:
        # PRESERVE keeps the model's (eval) mode but skips the eval peephole that folds BN into Conv.
        kwargs["training"] = torch.onnx.TrainingMode.PRESERVE
    torch.onnx.export(model, (dummy,), path, **kwargs)
    onnx.checker.check_model(onnx.load(path), full_check=True)


def check_against_torch(model: nn.Module, family: Family, path: str, gen: torch.Generator) -> float:
    x = torch.randn(3, *family.input_shape, generator=gen)  # batch 3 differs from the export batch
    with torch.no_grad():
        expected = model(x)
    expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(list(family.outputs), {"input": x.numpy()})
    worst = 0.0
    for name, e, g in zip(family.outputs, expected, got):
        e = e.numpy()
        if e.shape != g.shape:
            raise SystemExit(f"{path}: output {name} shape {g.shape} != torch {e.shape}")
        if not np.isfinite(g).all() or float(np.abs(e).max()) == 0.0:
            raise SystemExit(f"{path}: output {name} is degenerate")
        worst = max(worst, float(np.abs(e - g).max()))
    if worst > TOLERANCE:
        raise SystemExit(f"{path}: onnxruntime differs from torch by {worst:.3e}")
    return worst


def describe(path: str) -> str:
    model = onnx.load(path)
    ops = Counter(n.op_type for n in model.graph.node)

    def shape(vi):
        return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]

    ios = [f"{vi.name}{shape(vi)}" for vi in list(model.graph.input) + list(model.graph.output)]
    return f"{' -> '.join(ios)}; ops {dict(sorted(ops.items()))}"


def build(name: str) -> None:
    family = FAMILIES[name]
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    model = family.build()
    randomize_norms(model, gen)
    model.eval()
    variants = [(name, False)] + ([("resnet_basic_bn", True)] if name == "resnet_basic" else [])
    for file_name, keep_bn in variants:
        path = os.path.join(OUT_DIR, f"{file_name}.onnx")
        export(model, family, path, keep_bn)
        diff = check_against_torch(model, family, path, gen)
        print(f"{file_name}.onnx: {os.path.getsize(path) / 1024:.1f} KB, max|ort-torch| {diff:.1e}; "
              f"{describe(path)}")


def main(argv: list[str]) -> int:
    names = argv or list(FAMILIES)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        print(f"unknown families {unknown}; known: {list(FAMILIES)}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    os.makedirs(OUT_DIR, exist_ok=True)
    for name in names:
        build(name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
