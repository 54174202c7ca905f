"""Conv, ConvTranspose, Gemm and MatMul with a constant weight seen as one linear map y = W x + b.

One layout for every pass: W is [outputs, features] in float64, where a feature is an input channel x
kernel position for a Conv (its im2col), an input feature for Gemm/MatMul. `matrix` reads W from the
weight as ONNX stores it, `stored` writes W back in that layout; `bias` and `stored_bias` do the same for
b (Gemm's alpha and beta are folded into W and b, so callers never see them). Pruning's exits and repair,
low-rank and quantization's equalization and bias correction all read and write weights through these.
"""
from __future__ import annotations

import numpy as np


def matrix(op: str, weight: np.ndarray, attrs: dict | None = None) -> np.ndarray:
    """W [outputs, features] (float64) of a weight stored as ONNX keeps it. ConvTranspose (group 1) stores
    [in, out, kh, kw]; each output position gathers input channel x kernel position as a Conv does, so W
    is [out, in * kh * kw]."""
    attrs = attrs or {}
    w = np.asarray(weight)
    if op == "Conv":
        return w.reshape(w.shape[0], -1).astype(np.float64)
    if op == "ConvTranspose":
        return np.swapaxes(w, 0, 1).reshape(w.shape[1], -1).astype(np.float64)
    if op == "Gemm":
        w = w if int(attrs.get("transB", 0)) else w.T
        alpha = float(attrs.get("alpha", 1.0))
        return w.astype(np.float64) * alpha if alpha != 1.0 else w.astype(np.float64)
    if op == "MatMul":
        return w.T.astype(np.float64)
    raise ValueError(f"{op} is not a linear layer")


def stored(op: str, w: np.ndarray, shape: tuple, attrs: dict | None = None) -> np.ndarray:
    """The ONNX layout (of `shape`) of W [outputs, features]: the inverse of `matrix`."""
    attrs = attrs or {}
    if op == "Conv":
        return w.reshape(shape)
    if op == "ConvTranspose":
        return np.swapaxes(w.reshape(shape[1], shape[0], *shape[2:]), 0, 1)
    if op == "Gemm":
        alpha = float(attrs.get("alpha", 1.0))
        w = w / alpha if alpha != 1.0 else w
        return w if int(attrs.get("transB", 0)) else w.T
    if op == "MatMul":
        return w.T.reshape(shape)
    raise ValueError(f"{op} is not a linear layer")


def bias(op: str, values: np.ndarray, outputs: int, attrs: dict | None = None) -> np.ndarray:
    """b [outputs] of a bias input (Gemm's C broadcast from one value and scaled by beta)."""
    b = np.broadcast_to(np.asarray(values).reshape(-1), (outputs,))
    beta = float((attrs or {}).get("beta", 1.0)) if op == "Gemm" else 1.0
    return b * beta


def stored_bias(op: str, b: np.ndarray, attrs: dict | None = None) -> np.ndarray:
    """The bias input that gives b (Gemm: divided by beta)."""
    beta = float((attrs or {}).get("beta", 1.0)) if op == "Gemm" else 1.0
    return np.asarray(b) / beta if beta != 1.0 else np.asarray(b)


def features_per_channel(op: str, shape: tuple) -> int:
    """Columns of W per input channel: the kernel positions of a Conv, 1 otherwise."""
    return int(np.prod(shape[2:])) if op == "Conv" else 1


def conv_patches(x: np.ndarray, kernel: tuple, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1),
                 positions: tuple | None = None) -> np.ndarray:
    """A 2-D Conv's feature rows (im2col) of input x [N, C, H, W]: [rows, C * kh * kw], features ordered
    (channel, kernel row, kernel col) like W's columns. One row per output position in `positions` =
    (sample, out row, out col) index arrays, or for every output position (sample, row, col order).
    ONNX pads order: top, left, bottom, right."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilations
    top, left, bottom, right = pads
    if positions is None:
        n, h, w = x.shape[0], x.shape[2] + top + bottom, x.shape[3] + left + right
        ho, wo = (h - dh * (kh - 1) - 1) // sh + 1, (w - dw * (kw - 1) - 1) // sw + 1
        positions = (np.repeat(np.arange(n), ho * wo), np.tile(np.repeat(np.arange(ho), wo), n), np.tile(np.arange(wo), n * ho))
    bi, py, px = positions
    if (kh, kw) == (1, 1) and tuple(pads) == (0, 0, 0, 0):
        return x[bi, :, py * sh, px * sw]
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    rows_y = (py * sh)[:, None, None] + (np.arange(kh) * dh)[None, :, None]
    rows_x = (px * sw)[:, None, None] + (np.arange(kw) * dw)[None, None, :]
    patches = xp[bi[:, None, None], :, rows_y, rows_x]  # [rows, kh, kw, c]
    return np.moveaxis(patches, -1, 1).reshape(len(bi), -1)
