"""`--report out.html` opened in a real headless Chromium: no console errors (a control page proves the
check sees them), the SVG charts are in the DOM, and the screenshot shows their bars. Skips without
chromium (`.ci/run` installs Debian's package when it can)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
AFTER_BLUE = (47, 111, 223)  # svg_charts.AFTER, the colour of every "after" bar

pytestmark = pytest.mark.skipif(BROWSER is None, reason="chromium is not installed")


def _chromium(page: Path, folder: Path, *extra) -> subprocess.CompletedProcess:
    profile = folder / f"profile-{len(list(folder.glob('profile-*')))}"  # a fresh profile per run
    args = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-sync", f"--user-data-dir={profile}",
            "--enable-logging=stderr", "--v=0", *extra, page.as_uri()]
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def _console(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    folder = tmp_path_factory.mktemp("html")
    report = folder / "report.html"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "onnxslim.cli", str(MODELS / "digits_resnet_folded.onnx"), str(folder / "slim.onnx"),
                           "--prune", "0.5", "--calib", str(MODELS / "digits_calib.npz"), "--lowrank", "0.9", "--no-latency",
                           "--report", str(report), "-q"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    return folder, report


def test_control_page_console_error_is_seen(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>console.error('control')</script></body></html>")
    assert any("control" in line for line in _console(_chromium(bad, tmp_path, "--dump-dom").stderr))


def test_report_opens_without_console_errors_and_has_the_charts(page):
    folder, report = page
    proc = _chromium(report, folder, "--dump-dom")
    assert proc.returncode == 0
    assert _console(proc.stderr) == []
    dom = proc.stdout
    # width, MACs, pruned-layer error, low-rank error: four charts, each with bars
    charts = dom.split("<svg")[1:]
    assert len(charts) == 4
    for chart in charts:  # one <g> per layer, each with its bar
        rows = chart.split("</svg>")[0].split("<g>")[1:]
        assert len(rows) >= 3 and all("<rect" in row for row in rows)
    assert "per-layer width before and after" in dom and "per-layer MACs before and after" in dom
    assert "onnxslim " in dom and "--prune 0.5" in dom  # the exact command
    assert "onnxslim: MACs" in dom  # the one-line summary


def test_screenshot_shows_the_bars(page):
    folder, report = page
    shot = folder / "shot.png"
    proc = _chromium(report, folder, f"--screenshot={shot}", "--window-size=1100,2400")
    assert proc.returncode == 0 and shot.exists()
    image = Image.open(shot).convert("RGB")
    blue = sum(count for count, rgb in image.getcolors(1 << 20) if all(abs(a - b) < 12 for a, b in zip(rgb, AFTER_BLUE)))
    assert blue > 2000  # the drawn "after" bars, not just the page's text
