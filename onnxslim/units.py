"""Numbers as the terminal and the HTML page print them (MACs, bytes, milliseconds), and an error's first line."""
from __future__ import annotations


def si(value) -> str:
    if value is None:
        return "?"
    value = float(value)
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.4g}"


def size(value) -> str:
    if value is None:
        return "?"
    for scale, suffix in ((2**30, "GB"), (2**20, "MB"), (2**10, "KB")):
        if value >= scale:
            return f"{value / scale:.3g} {suffix}"
    return f"{int(value)} B"


def ms(value) -> str:
    return "?" if value is None else f"{value:.3g} ms"


def first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
