"""The lines the CLI prints for every run: the model before and after, and what each cleanup rule did."""
from __future__ import annotations

from .units import size


def model_lines(report: dict) -> list[str]:
    """Nodes, initializers and size of the model before and after."""
    stats = report.get("model_stats")
    if not stats:
        return []
    (n0, n1), (i0, i1), (b0, b1) = stats["nodes"], stats["initializers"], stats["bytes"]
    return [f"model: nodes {n0} -> {n1}, initializers {i0} -> {i1}, size {size(b0)} -> {size(b1)}"]


def cleanup_lines(cleanup: dict) -> list[str]:
    """What each cleanup rule did, and what was left unfolded."""
    lines = []
    rules = cleanup.get("rules") or {}
    if rules:
        lines.append("  cleanup: " + ", ".join(f"{name} {count}" for name, count in rules.items()))
    for note in (cleanup.get("left_unfolded_size") or [])[:3]:
        lines.append(f"  not folded: {note}")
    for note in (cleanup.get("fold_errors") or [])[:3]:
        lines.append(f"  not folded: {note}")
    return lines
