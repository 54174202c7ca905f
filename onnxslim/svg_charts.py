"""Small inline SVG charts for the HTML report, drawn here so the page needs no script and no network."""
from __future__ import annotations

from html import escape

BEFORE, AFTER, WORSE = "#c9ced6", "#2f6fdf", "#e8833a"
ROW = 18          # px per bar row
LABEL_W = 300     # px for the row labels
BAR_W = 420       # px for the longest bar
VALUE_W = 150     # px for the value text after the bars
FONT = "font-family='system-ui,sans-serif' font-size='11'"


def _short(name: str, width: int = 46) -> str:
    return name if len(name) <= width else "\u2026" + name[-(width - 1):]


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return (f"<svg xmlns='http://www.w3.org/2000/svg' class='chart' width='{width}' height='{height}' "
            f"viewBox='0 0 {width} {height}' role='img' aria-label='{escape(title, quote=True)}'>"
            + "".join(body) + "</svg>")


def _legend(items: list[tuple[str, str]], y: int) -> list[str]:
    out, x = [], LABEL_W
    for color, text in [i for i in items if i[1]]:
        out.append(f"<rect x='{x}' y='{y - 9}' width='12' height='10' fill='{color}'/>"
                   f"<text x='{x + 16}' y='{y}' {FONT}>{escape(text)}</text>")
        x += 24 + 7 * len(text)
    return out


def paired_bars(rows: list[tuple[str, float, float, str]], title: str, legend=("before", "after")) -> str:
    """One row per layer: a light bar (before) under a dark bar (after), scaled to the largest value; with a
    one-item legend, one dark bar per row (the value is `after`). rows: (label, before, after, value text)."""
    top = 22
    height = top + ROW * len(rows) + 8
    single = len(legend) == 1
    scale = BAR_W / max([max(b, a) for _, b, a, _ in rows] + [1e-12])
    body = _legend([(AFTER, legend[0])] if single else [(BEFORE, legend[0]), (AFTER, legend[1])], 13)
    for i, (label, before, after, text) in enumerate(rows):
        y = top + i * ROW
        before = 0.0 if single else before
        color = WORSE if after > before * 1.0001 and not single else AFTER
        under = "" if single else f"<rect x='{LABEL_W}' y='{y + 2}' width='{max(before * scale, 0.5):.1f}' height='{ROW - 4}' fill='{BEFORE}'/>"
        inset = 2 if single else 5  # a single bar is as tall as a "before" bar
        body.append(f"<g><title>{escape(label)}: {escape(text)}</title>"
                    f"<text x='{LABEL_W - 6}' y='{y + 12}' text-anchor='end' {FONT}>{escape(_short(label))}</text>" + under
                    + f"<rect x='{LABEL_W}' y='{y + inset}' width='{max(after * scale, 0.5) if after else 0:.1f}' height='{ROW - 2 * inset}' fill='{color}'/>"
                    f"<text x='{LABEL_W + BAR_W + 6}' y='{y + 12}' {FONT}>{escape(text)}</text></g>")
    return _svg(LABEL_W + BAR_W + VALUE_W, height, body, title)


def line_chart(points: list[tuple[float, float]], title: str, xlabel: str, ylabel: str) -> str:
    """A polyline with dots, axes and min/max ticks (the x axis runs from large to small when x falls)."""
    w, h, left, bottom, pad = 560, 260, 64, 36, 14
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = 0.0, max(ys) or 1.0
    falling = xs[0] > xs[-1]

    def px(x):
        t = (x - x0) / ((x1 - x0) or 1.0)
        return left + (1 - t if falling else t) * (w - left - pad)

    def py(y):
        return h - bottom - (y - y0) / ((y1 - y0) or 1.0) * (h - bottom - pad)
    path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
    body = [f"<line x1='{left}' y1='{h - bottom}' x2='{w - pad}' y2='{h - bottom}' stroke='#888'/>",
            f"<line x1='{left}' y1='{pad}' x2='{left}' y2='{h - bottom}' stroke='#888'/>",
            f"<polyline points='{path}' fill='none' stroke='{AFTER}' stroke-width='2'/>"]
    body += [f"<circle cx='{px(x):.1f}' cy='{py(y):.1f}' r='3' fill='{AFTER}'><title>{x:.4g}: {y:.4g}</title></circle>" for x, y in points]
    for x in sorted({x0, x1}):
        body.append(f"<text x='{px(x):.1f}' y='{h - bottom + 14}' text-anchor='middle' {FONT}>{x:.3g}</text>")
    for y in (y0, y1):
        body.append(f"<text x='{left - 6}' y='{py(y) + 4:.1f}' text-anchor='end' {FONT}>{y:.3g}</text>")
    body.append(f"<text x='{(left + w - pad) / 2:.0f}' y='{h - 6}' text-anchor='middle' {FONT}>{escape(xlabel)}</text>")
    body.append(f"<text x='14' y='{(h - bottom) / 2:.0f}' text-anchor='middle' transform='rotate(-90 14 {(h - bottom) / 2:.0f})' {FONT}>{escape(ylabel)}</text>")
    return _svg(w, h, body, title)
