"""The passes, in the order they run. A new pass: its folder here and one line in PASSES (onnxslim.protocol)."""
from __future__ import annotations

from . import cleanup, lowrank, prune, quantize

PASSES = (
    cleanup.PASS,
    prune.PASS,
    lowrank.PASS,
    quantize.PASS,  # last: it needs the final weights
)
