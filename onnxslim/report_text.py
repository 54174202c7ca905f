"""The end of the terminal report: what happened to each pruned group or factorized layer (a short table,
the most damaged first when there are many) and one line with the headline numbers to paste elsewhere."""
from __future__ import annotations

TABLE_ROWS = 12  # rows shown per table; the rest are counted ("... 40 more") and listed in --report


def group_name(trace: str) -> str:
    """The group's first source layer, from its trace 'a/Conv.out, b/Conv.out => Relu => c/Conv.in'."""
    sources = trace.split(" => ")[0].split(", ")
    first = sources[0][:-4] if sources[0].endswith(".out") else sources[0]
    return first + (f" (+{len(sources) - 1})" if len(sources) > 1 else "")


def shorten(text: str, width: int = 44) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3):]


def _worst(errors: dict, key: str):
    values = [e.get(key) for e in errors.values() if e.get(key) is not None]
    return max(values) if values else None


def prune_rows(prune: dict) -> list[dict]:
    """One row per pruned group: name, widths, criterion, worst layer error (relative) before/after repair."""
    return [{"group": g["group"], "name": group_name(g.get("trace", "")), "before": g["before"], "after": g["after"],
             "criterion": g.get("importance"), "error_before": _worst(g.get("exit_relative_error") or {}, "relative_error_before"),
             "error_after": _worst(g.get("exit_relative_error") or {}, "relative_error_after")} for g in prune.get("pruned_groups", [])]


def pick(rows: list[dict], limit: int, key) -> tuple[list[dict], int]:
    """All rows if they fit, else the `limit` largest by `key`, kept in graph order."""
    if len(rows) <= limit:
        return rows, 0
    chosen = set(id(r) for r in sorted(rows, key=key, reverse=True)[:limit])
    return [r for r in rows if id(r) in chosen], len(rows) - limit


def _err(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def prune_table(prune: dict, limit: int = TABLE_ROWS) -> list[str]:
    rows = prune_rows(prune)
    if not rows:
        return []
    damage = lambda r: (r["error_after"] if r["error_after"] is not None else -1, 1 - r["after"] / max(r["before"], 1))
    shown, hidden = pick(rows, limit, damage)
    name_w = max(len(shorten(r["name"])) for r in shown)
    width_w = max(len(f"{r['before']} -> {r['after']}") for r in shown)
    title = "pruned groups" + (f" ({limit} with the largest layer error of {len(rows)})" if hidden else "")
    lines = [title + ":", f"  {'#':>4}  {'group':<{name_w}}  {'width':>{width_w}}  {'criterion':<14} layer error before -> after repair"]
    for r in shown:
        width = f"{r['before']} -> {r['after']}"
        lines.append(f"  {r['group']:>4}  {shorten(r['name']):<{name_w}}  {width:>{width_w}}  {str(r['criterion']):<14} "
                     f"{_err(r['error_before']):>6} -> {_err(r['error_after'])}")
    if hidden:
        lines.append(f"  ... {hidden} more pruned groups (all in --report)")
    return lines


def lowrank_table(lowrank: dict, limit: int = TABLE_ROWS) -> list[str]:
    rows = [layer for layer in lowrank.get("layers", []) if layer.get("scheme")]
    if not rows:
        return []
    shown, hidden = pick(rows, limit, lambda r: r.get("error") or 0.0)
    name_w = max(len(shorten(r["name"])) for r in shown)
    title = "factorized layers" + (f" ({limit} with the largest error of {len(rows)})" if hidden else "")
    lines = [title + ":", f"  {'layer':<{name_w}}  {'scheme':<8} {'rank':>11}  {'MACs':>6}  output error"]
    for r in shown:
        rank = f"{r['rank']} of {r['full_rank']}"
        macs = r["macs_after"] / r["macs_before"] if r.get("macs_before") else 1.0
        lines.append(f"  {shorten(r['name']):<{name_w}}  {r['scheme']:<8} {rank:>11}  {macs:>5.2f}x  {_err(r.get('error'))}")
    if hidden:
        lines.append(f"  ... {hidden} more factorized layers (all in --report)")
    return lines


def _ratio(section: dict | None) -> str | None:
    if not section or section.get("ratio") is None:
        return None
    return f"{section['ratio']:.2f}x"


def one_line(report: dict) -> str:
    """'onnxslim: MACs 0.49x, params 0.31x, size 0.31x, latency 0.58x, cosine 0.980, top-1 agree 100%'."""
    v = report.get("validation")
    if not v:
        prune = report.get("passes", {}).get("prune") or {}
        est = prune.get("estimated_macs_fraction")
        return "onnxslim: not validated" + (f"; MACs {est:.2f}x (estimated)" if est is not None else "")
    if "skipped" in v:
        return "onnxslim: validation skipped (the model is written; see above)"
    sections = (("MACs", "macs"), ("params", "params"), ("size", "size_bytes"), ("latency", "latency_ms"))
    parts = [f"{label} {r}" for label, key in sections if (r := _ratio(v.get(key)))]
    outputs = list((v.get("outputs") or {}).values())
    cosines = [o["cosine"] for o in outputs if o.get("cosine") is not None]
    if cosines:
        parts.append(f"cosine {min(cosines):.3f}")
    agree = [o["top1_agreement"] for o in outputs if o.get("top1_agreement") is not None]
    if agree:
        parts.append(f"top-1 agree {100 * min(agree):.0f}%")
    return "onnxslim: " + ", ".join(parts)
