"""The validation report as a short before/after/ratio table for the terminal, and the number formats the
other views (summary line, HTML page, inspect) share."""
from __future__ import annotations


from .units import ms, si
from .units import size as human_bytes


def pct(value) -> str:
    return "?" if value is None else f"{100 * value:.1f}%"


_ROWS = (("macs", "MACs", si), ("params", "params", si), ("size_bytes", "size", human_bytes),
         ("latency_ms", "latency", ms), ("top1_accuracy", "top-1 acc", pct), ("top5_accuracy", "top-5 acc", pct))


_METRICS = (("cosine", "cosine {:.6f}"), ("max_abs_error", "max abs err {:.3g}"), ("sqnr_db", "SQNR {:.1f} dB"))
_KIND_METRICS = (("top1_agreement", "top-1 agree"), ("top5_agreement", "in top-5"), ("nn_agreement", "nearest-neighbour agree"),
                 ("pixel_agreement", "pixel argmax agree"), ("token_cosine", "token cosine"))


def format_report_table(report: dict) -> str:
    """A short before/after/ratio table plus one line per output; prints only the sections present."""
    lines = [f"{'':<12}{'before':>12}{'after':>12}{'ratio':>9}"]

    def row(label, section, fmt):
        ratio = section.get("ratio")
        line = f"{label:<12}{fmt(section.get('before')):>12}{fmt(section.get('after')):>12}" \
               f"{(f'{ratio:.3f}' if isinstance(ratio, (int, float)) else '-'):>9}"
        notes = []
        unknown = section.get("unknown_nodes")
        if isinstance(unknown, dict):
            notes.append(f"{unknown.get('before')}/{unknown.get('after')} nodes of unknown shape not counted")
        if section.get("error"):
            notes.append(str(section["error"]))
        if section.get("timing") == "sequential":  # models too large to hold both sessions (validate.PAIRED_MAX_BYTES)
            notes.append("timed one model after the other, not in alternating blocks")
        spread = section.get("ratio_iqr")
        if isinstance(spread, (list, tuple)) and len(spread) == 2:
            notes.append(f"middle half of the timing blocks {spread[0]:.3f}-{spread[1]:.3f}")
            if isinstance(ratio, (int, float)) and spread[1] - spread[0] > 0.2 * ratio:
                # measured on 2 shared cores: 2-thread block ratios spanned 0.51-1.81, 1-thread ones +-0.02
                notes.append("timing unstable on this machine: try --threads 1")
        lines.append(line + ("  (" + "; ".join(notes) + ")" if notes else ""))

    known = {key for key, _, _ in _ROWS}
    for key, label, fmt in _ROWS:
        if isinstance(report.get(key), dict):
            row(label, report[key], fmt)
    for key, section in report.items():  # sections other passes add, e.g. accuracy
        if key not in known and isinstance(section, dict) and "before" in section and "after" in section:
            row(key.replace("_", " ")[:12], section, si)
    if len(lines) == 1:
        lines = []
    for name, metrics in (report.get("outputs") or {}).items():
        if not isinstance(metrics, dict):
            continue
        parts = [f"output {name}:"] + [text.format(metrics[key]) for key, text in _METRICS if key in metrics]
        for key, label in _KIND_METRICS:
            if key in metrics:
                parts.append(f"{label} {100 * metrics[key]:.1f}%" if key.endswith("agreement") else f"{label} {metrics[key]:.4f}")
        if metrics.get("nonfinite_mismatch"):
            parts.append(f"NaN/inf mismatches {metrics['nonfinite_mismatch']}")
        lines.append("  ".join(parts))
    return "\n".join(lines)
