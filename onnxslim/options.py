"""Range checks of the CLI's numeric options, before any work (issue 15: `--min-cosine nan` silently turned
the fidelity check off; `--seed -1` was a ValueError inside numpy)."""
from __future__ import annotations

import math

from .errors import SlimError

SEED_MAX = 2**63 - 1


def check_options(o: dict, floats=("min_cosine",)) -> None:
    """`floats`: the float options (the CLI's list, built from its options): NaN compares false with
    everything, so a range check alone lets it by."""
    for name in floats:
        value = o.get(name)
        if value is not None and not math.isfinite(value):
            raise SlimError(f"--{name.replace('_', '-')} {value}: give a finite number")
    if o.get("min_cosine") is not None and not -1.0 <= o["min_cosine"] <= 1.0:
        raise SlimError(f"--min-cosine {o['min_cosine']:g}: a cosine similarity lies in [-1, 1]")
    seed = o.get("seed", 0)
    if seed is not None and not 0 <= int(seed) <= SEED_MAX:
        raise SlimError(f"--seed {seed}: give an integer in [0, 2**63 - 1]")
    for name in ("calib_size", "threads", "round_to", "val_size"):
        if o.get(name) is not None and o[name] < 1:
            raise SlimError(f"--{name.replace('_', '-')} {o[name]}: give at least 1")


def float_list(value, name):
    """`127` or `123.7,116.3,103.5` -> a tuple of floats (image --mean/--std)."""
    if value is None:
        return None
    try:
        values = tuple(float(v) for v in str(value).split(","))
    except ValueError:
        raise SlimError(f"{name} '{value}': expected comma-separated numbers") from None
    if not all(math.isfinite(v) for v in values):
        raise SlimError(f"{name} '{value}': give finite numbers")
    return values
