"""What the channel rules and the analysis share: the roles of constant spaces, the Frozen signal, and small
helpers (shapes, constant int lists, per-node constant copies)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import onnx_graphsurgeon as gs

if TYPE_CHECKING:  # the rules receive the Builder; importing it at run time would be a cycle (channels imports ops)
    from onnxslim.channels import Builder
else:
    Builder = "onnxslim.channels.Builder"  # named in the rules' annotations only

# roles of constant spaces
SOURCE = "source"  # produces the channels (Conv weight axis 0, bias, Gemm/MatMul output features)
EXIT = "exit"  # contracts the channels away (Conv weight axis 1, Gemm/MatMul input features)
PARAM = "param"  # per-channel parameters that just follow (bias terms of Add, BN mean/var, PRelu slope)
BN_SCALE = "bn_scale"  # BatchNormalization gamma: the `bn` importance reads it
ACTIVATION = "activation"


class Frozen(Exception):
    """Raised inside a rule: the triggering space cannot be pruned, with the reason."""


def shape_of(t: gs.Tensor) -> tuple:
    if t.shape is None:
        raise Frozen(f"shape of '{t.name}' is unknown")
    return tuple(t.shape)


def rank_of(t: gs.Tensor) -> int:
    return len(shape_of(t))


def is_int(d) -> bool:
    return isinstance(d, (int, np.integer)) and d >= 0


def present(node: gs.Node, i: int) -> bool:
    return i < len(node.inputs) and node.inputs[i].name != ""


def int_list(node: gs.Node, attr: str, index: int, default=None):
    """An int list given as an attribute (old opsets) or a constant input (new opsets)."""
    if attr in node.attrs:
        return [int(v) for v in np.atleast_1d(node.attrs[attr])]
    if present(node, index):
        t = node.inputs[index]
        if not isinstance(t, gs.Constant):
            raise Frozen(f"{attr} of {node.op} is computed at run time")
        return [int(v) for v in np.atleast_1d(t.values)]
    return default


def replace_input(node: gs.Node, index: int, values: np.ndarray, tag: str) -> None:
    """Constants may be shared between nodes: give this node its own new one."""
    const = gs.Constant(f"{node.name}_{tag}", np.asarray(values))
    while len(node.inputs) <= index:
        node.inputs.append(gs.Variable.empty())
    node.inputs[index] = const


def same_tensor(a: gs.Tensor, b: gs.Tensor) -> bool:
    return a is not None and b is not None and a.name == b.name
