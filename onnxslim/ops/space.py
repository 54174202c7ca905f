"""What the channel rules and the analysis share: the roles of constant spaces and the Frozen signal."""
from __future__ import annotations

# roles of constant spaces
SOURCE = "source"  # produces the channels (Conv weight axis 0, bias, Gemm/MatMul output features)
EXIT = "exit"  # contracts the channels away (Conv weight axis 1, Gemm/MatMul input features)
PARAM = "param"  # per-channel parameters that just follow (bias terms of Add, BN mean/var, PRelu slope)
BN_SCALE = "bn_scale"  # BatchNormalization gamma: the `bn` importance reads it
ACTIVATION = "activation"


class Frozen(Exception):
    """Raised inside a rule: the triggering space cannot be pruned, with the reason."""
