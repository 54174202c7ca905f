"""The end of the terminal report (per-group table, one-line summary), progress ETAs, the per-layer
before/after table and the HTML page's structure."""
import io

import numpy as np
import onnx
from onnx import numpy_helper

from onnxslim import html_report
from onnxslim.layer_table import compare_layers
from onnxslim.progress import Progress, eta
from onnxslim.report_text import group_name, one_line, prune_table

from pathlib import Path

FAMILIES = Path(__file__).resolve().parent.parent / "models" / "families"


def _prune_report(n):
    groups = [{"group": i, "before": 64, "after": 32, "importance": "l1", "trace": f"/b{i}/Conv.out => Relu => /c{i}/Conv.in",
               "exit_relative_error": {f"/c{i}/Conv": {"relative_error_before": 0.5, "relative_error_after": i / 100}}}
              for i in range(n)]
    return {"pruned_groups": groups}


def test_prune_table_short_for_big_models():
    lines = prune_table(_prune_report(30), limit=12)
    rows = [line for line in lines[2:] if not line.strip().startswith("...")]
    assert len(rows) == 12
    # the 12 largest errors after repair (groups 18..29), in graph order
    assert [int(r.split()[0]) for r in rows] == list(range(18, 30))
    assert lines[-1].strip() == "... 18 more pruned groups (all in --report)"
    assert "64 -> 32" in rows[0] and "0.500 -> 0.180" in rows[0]


def test_prune_table_lists_all_small():
    lines = prune_table(_prune_report(3))
    assert len(lines) == 2 + 3 and not any("more" in line for line in lines)


def test_group_name_from_trace():
    assert group_name("/a/Conv.out, /b/Conv.out => Add => /c/Conv.in") == "/a/Conv (+1)"
    assert group_name("/a/Conv.out => Relu") == "/a/Conv"


def test_one_line_summary():
    report = {"validation": {"macs": {"ratio": 0.494}, "params": {"ratio": 0.307}, "size_bytes": {"ratio": 0.314},
                             "latency_ms": {"ratio": 0.576}, "outputs": {"a": {"cosine": 0.9801, "top1_agreement": 1.0},
                                                                        "b": {"cosine": 0.99}}}}
    assert one_line(report) == "onnxslim: MACs 0.49x, params 0.31x, size 0.31x, latency 0.58x, cosine 0.980, top-1 agree 100%"
    assert one_line({"passes": {"prune": {"estimated_macs_fraction": 0.7}}}) == "onnxslim: not validated; MACs 0.70x (estimated)"


def test_eta():
    assert eta(10.0, 5, 10) == "ETA 10s"
    assert eta(50.0, 2, 7) == "ETA 2m05s"
    assert eta(1.0, 0, 7) == "ETA ?"
    stream = io.StringIO()
    with Progress("work", total=4, delay=0.0, stream=stream) as bar:
        bar.update(1)
    assert "1/4" in stream.getvalue() and "ETA" in stream.getvalue()


def test_compare_layers_matches_the_pruned_weights():
    import onnxslim
    from onnxslim.passes.prune import PruneConfig
    model = onnx.load(str(FAMILIES / "vgg.onnx"))
    result = onnxslim.optimize(model, prune=PruneConfig(ratio=0.5), validate=False)
    rows = {r["name"]: r for r in result.report["layers"]}
    inits = {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}
    convs = [n for n in result.model.graph.node if n.op_type == "Conv"]
    assert convs and all(n.name in rows for n in convs)
    for n in convs:
        assert rows[n.name]["width_after"] == inits[n.input[1]].shape[0]
    assert any(r["width_after"] < r["width_before"] for r in rows.values())
    assert all(r["macs_after"] <= r["macs_before"] for r in rows.values())
    # the sum over layers is the model's MACs (only weighted layers compute in this model)
    from onnxslim.cost import model_cost
    assert sum(r["macs_after"] for r in rows.values()) == model_cost(result.model)["macs"]


def test_html_page_is_self_contained_and_escaped():
    report = {"command": "onnxslim a.onnx --exclude '<b>'", "passes": {"prune": {
        **_prune_report(2), "allocation_trace": [{"macs_fraction": 1 - s / 10, "loss": s / 100} for s in range(5)]}},
        "layers": [{"name": "/c0/Conv", "op": "Conv", "width_before": 64, "width_after": 32, "rank": None,
                    "macs_before": 100, "macs_after": 50}]}
    page = html_report.render(report)
    assert "<script" not in page and "Content-Security-Policy" in page and "default-src 'none'" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "&lt;b&gt;" in page and "<b>" not in page
    assert page.count("<svg") == 4 and "<polyline" in page  # width, MACs, layer error, sensitivity trace
    assert "64 \u2192 32" in page


def test_compare_layers_follows_low_rank_and_dynamic_int8():
    import onnxslim
    from onnxslim.passes.lowrank import LowRankConfig
    from onnxslim.passes.quantize import QuantizeConfig
    model = onnx.load(str(FAMILIES / "transformer.onnx"))
    result = onnxslim.optimize(model, lowrank=LowRankConfig(energy=0.5), quantize=QuantizeConfig(mode="int8-dynamic"), validate=False)
    rows = result.report["layers"]
    split = {layer["name"]: layer for layer in result.report["passes"]["lowrank"]["layers"] if layer.get("scheme")}
    assert split and all(r["width_after"] == r["width_before"] and r["macs_after"] > 0 for r in rows)
    for r in rows:  # the split layers show their rank and the two halves' MACs
        if r["name"] in split:
            assert r["rank"] == split[r["name"]]["rank"] and r["macs_after"] == split[r["name"]]["macs_after"]
        else:
            assert r["rank"] is None and r["macs_after"] == r["macs_before"]


def test_nested_bars_share_one_line_and_keep_the_outer_eta():
    stream = io.StringIO()
    with Progress("sensitivity", total=4, delay=0.0, stream=stream) as outer:
        outer.update(1)
        with Progress("calibrating", total=2, delay=0.0, stream=stream) as inner:
            inner._last = 0.0
            inner.update(1)
        outer._last = 0.0
        outer.update(1)
    text = stream.getvalue()
    lines = text.split("\n")
    assert lines[-1] == "" and len(lines) == 2  # one line, ended once, by the outer bar's "done"
    assert "sensitivity 1/4 ETA" in text and "> calibrating [" in text
    assert "calibrating" not in lines[0].split("\r")[-1] and "sensitivity" in lines[0].split("\r")[-1]
    assert "done in" in lines[0].split("\r")[-1]
