"""`--report out.html`: the whole report as one self-contained page (inline CSS and SVG, no script, no
network: a Content-Security-Policy forbids every fetch), readable without onnxslim installed."""
from __future__ import annotations

import json
from html import escape
from pathlib import Path

from .report_text import one_line, pick, prune_rows, shorten
from .svg_charts import line_chart, paired_bars
from .units import ms, si
from .units import size as human_bytes

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#1d2330;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #dde;padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}td,th{padding:.2em .7em;border-bottom:1px solid #eee;text-align:right}
.l{text-align:left}pre{background:#f4f5f8;padding:.7em;overflow-x:auto;white-space:pre-wrap}
.headline{font-size:1.05em;background:#eef3fd;padding:.6em .8em;border-left:4px solid #2f6fdf}
.note{color:#8a4b08}.chart{display:block;margin:.5em 0}.muted{color:#667}
"""
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
CHART_ROWS = 120  # larger models show the layers with the most MACs removed; the table in the JSON has all


def _numeric(value) -> bool:
    text = str(value)
    return text[:1].isdigit() or text in ("-", "inf") or (text[:1] == "-" and text[1:2].isdigit())


def _cell(value, tag="td", left=None) -> str:
    left = not _numeric(value) if left is None else left  # words left, numbers right
    return f"<{tag} class='l'>{escape(str(value))}</{tag}>" if left else f"<{tag}>{escape(str(value))}</{tag}>"


def _table(header: list[str], rows: list[list]) -> str:
    lefts = [not _numeric(c) for c in rows[0]] if rows else [True] * len(header)
    head = "".join(_cell(str(h).replace("_", " "), "th", left) for h, left in zip(header, lefts))
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value, digits=4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _validation(v: dict) -> str:
    if "skipped" in v:
        return f"<p>validation skipped: {escape(str(v['skipped']))}</p>"
    sections = (("MACs", "macs", si), ("params", "params", si), ("size", "size_bytes", human_bytes), ("latency", "latency_ms", ms))
    rows = [[label, fmt(s["before"]), fmt(s["after"]), _fmt(s.get("ratio"), 3)]
            for label, key, fmt in sections if (s := v.get(key)) and s.get("before") is not None]
    out = f"<p>validated on {escape(str(v.get('data')))}</p>" + _table(["", "before", "after", "ratio"], rows)
    outputs = v.get("outputs") or {}
    keys = sorted({k for o in outputs.values() for k in o if not isinstance(o[k], (dict, list))})
    if outputs:
        out += _table(["output", *keys], [[name, *(_fmt(o.get(k)) for k in keys)] for name, o in outputs.items()])
    return out


def _layer_charts(layers: list[dict]) -> str:
    if not layers:
        return ""
    rows, hidden = pick(layers, CHART_ROWS, lambda r: (r["macs_before"] or 0) - (r["macs_after"] or 0))
    note = f"<p class='muted'>{len(rows)} of {len(layers)} layers: those with the most MACs removed.</p>" if hidden else ""
    widths = [(r["name"], r["width_before"] or 0, r["width_after"] or 0,
               f"{r['width_before']} \u2192 {r['width_after']}" + (f" (rank {r['rank']})" if r.get("rank") else "")) for r in rows]
    macs = [(r["name"], r["macs_before"] or 0, r["macs_after"] or 0,
             f"{(r['macs_after'] or 0) / r['macs_before']:.2f}x" if r["macs_before"] else "-") for r in rows]
    return ("<h2>Per-layer width</h2>" + note + "<p class='muted'>output channels (features) of every weighted layer.</p>"
            + paired_bars(widths, "per-layer width before and after")
            + "<h2>Per-layer MACs</h2>" + paired_bars(macs, "per-layer MACs before and after"))


def _error_charts(report: dict) -> str:
    passes = report.get("passes", {})
    out = ""
    exits = [(name, e.get("relative_error_before") or 0.0, e.get("relative_error_after") or 0.0,
              f"{_fmt(e.get('relative_error_before'), 3)} \u2192 {_fmt(e.get('relative_error_after'), 3)}")
             for g in (passes.get("prune") or {}).get("pruned_groups", []) for name, e in (g.get("exit_relative_error") or {}).items()]
    if exits:
        out += ("<h2>Per-layer error of the pruned network</h2><p class='muted'>relative output error of each layer that "
                "reads a pruned group, on held-out calibration samples.</p>"
                + paired_bars(exits[:CHART_ROWS], "per-layer error before and after repair", ("before repair", "after repair")))
    lowrank = [(r["name"], 0.0, r.get("error") or 0.0, f"rank {r['rank']} of {r['full_rank']}: {_fmt(r.get('error'), 3)}")
               for r in (passes.get("lowrank") or {}).get("layers", []) if r.get("scheme")]
    if lowrank:
        out += ("<h2>Per-layer error of the low-rank splits</h2>"
                + paired_bars(lowrank[:CHART_ROWS], "per-layer low-rank error", ("relative output error",)))
    trace = [t for t in (passes.get("prune") or {}).get("allocation_trace") or [] if "macs_fraction" in t and "loss" in t]
    if len(trace) > 1:
        out += ("<h2>Sensitivity</h2><p class='muted'>network loss (on held-out calibration samples) after each step "
                "of the allocation, against the MACs kept.</p>"
                + line_chart([(t["macs_fraction"], t["loss"]) for t in trace], "sensitivity trace", "fraction of the MACs kept", "loss"))
    return out


def _prune(prune: dict) -> str:
    if not prune:
        return ""
    keys = ("importance", "allocation", "round_to", "repair", "estimated_macs_fraction", "groups", "prunable_groups", "seconds")
    out = "<h2>Pruning</h2>" + _table(["setting", "value"], [[k, _fmt(prune.get(k))] for k in keys if k in prune])
    calib = prune.get("calibration")
    if calib:
        out += "<p>calibration: " + escape(", ".join(f"{k} {v}" for k, v in calib.items())) + "</p>"
    fidelity = prune.get("fidelity") or {}
    if fidelity.get("after_repair"):
        out += (f"<p>repair on {fidelity.get('samples')} calibration samples: loss {_fmt(fidelity['before_repair'].get('loss'))} "
                f"\u2192 {_fmt(fidelity['after_repair'].get('loss'))}</p>")
    out += "".join(f"<p class='note'>note: {escape(str(n))}</p>" for n in prune.get("notes") or [])
    rows = prune_rows(prune)
    if rows:
        out += "<h3>Pruned groups</h3>" + _table(
            ["#", "group", "width", "criterion", "layer error before repair", "after repair"],
            [[r["group"], shorten(r["name"], 60), f"{r['before']} \u2192 {r['after']}", r["criterion"], _fmt(r["error_before"], 3),
              _fmt(r["error_after"], 3)] for r in rows])
    frozen = prune.get("frozen") or []
    if frozen:
        out += f"<h3>Frozen groups ({len(frozen)})</h3>" + _table(
            ["#", "frozen / channels", "why"], [[f["group"], f"{f['frozen_channels']}/{f['channels']}", f["reasons"][0] if f["reasons"] else ""]
                                               for f in frozen[:CHART_ROWS]])
    return out


def _other_passes(passes: dict) -> str:
    out = ""
    cleanup = passes.get("cleanup")
    if cleanup:  # what the lossless cleanup changed: counts (and one level of per-rule counts), as they come
        flat = []
        for k, v in cleanup.items():
            if isinstance(v, dict):
                flat += [[f"{k}: {sub}", _fmt(x)] for sub, x in v.items() if not isinstance(x, (dict, list))]
            elif not isinstance(v, list):
                flat.append([k, _fmt(v)])
        out += "<h2>Cleanup</h2>" + _table(["", "value"], flat)
    quantize = passes.get("quantize")
    if quantize:
        floats = quantize.get("left_in_float") or []
        out += (f"<h2>Quantization</h2><p>{escape(str(quantize.get('mode')))}, for {escape(str((quantize.get('config') or {}).get('target')))}; "
                f"{len(floats)} nodes left in float</p>")
        for key in ("warning", "note"):
            if quantize.get(key):
                out += f"<p class='note'>{key}: {escape(str(quantize[key]))}</p>"
        if floats:
            out += _table(["node", "reason"], [[f.get("node"), f.get("reason")] for f in floats[:CHART_ROWS]])
    lowrank = passes.get("lowrank")
    if lowrank:
        out += (f"<h2>Low-rank splits</h2><p>{lowrank.get('factorized')} layers factorized; their MACs x{lowrank.get('fraction')}</p>")
    return out


def render(report: dict) -> str:
    """The page: headline, command, validation, passes, charts, and the full JSON at the end."""
    command = report.get("command") or "(run from the Python API)"
    model = report.get("model", "")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<meta http-equiv='Content-Security-Policy' content=\"{_CSP}\">",
        f"<title>onnxslim report {escape(Path(str(model)).name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>onnxslim report</h1><p>{escape(str(model))} \u2192 {escape(str(report.get('output', '')))}</p>",
        f"<p class='headline'>{escape(one_line(report))}</p>",
        f"<h2>Command</h2><pre>{escape(command)}</pre>",
    ]
    if report.get("validation"):
        parts.append("<h2>Validation</h2>" + _validation(report["validation"]))
    passes = report.get("passes", {})
    # the pictures first, the details after
    parts += [_layer_charts(report.get("layers") or []), _error_charts(report), _prune(passes.get("prune")), _other_passes(passes)]
    if report.get("ort_format"):
        parts.append("<h2>ORT format</h2>" + _table(["", "value"], [[k, _fmt(v)] for k, v in report["ort_format"].items()]))
    data = json.dumps(report, indent=1, default=str)
    parts.append(f"<h2>Full report</h2><details><summary>JSON ({len(data) // 1024 + 1} KB)</summary><pre>{escape(data)}</pre></details>")
    parts.append(f"<p class='muted'>total {escape(str(report.get('seconds')))} s</p></body></html>")
    return "\n".join(p for p in parts if p)

