"""The bare command on whole models: node count after and tool time, ours (cleanup, no validation) against
PyPI OnnxSlim in its own environment (see ext_onnxslim.py).

    python benchmarks/bench_bare_models.py --onnxslim-python VENV/bin/python MODEL.onnx ...
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import onnx

from bench_node_cases import external


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--onnxslim-python", help="python of a venv with PyPI onnxslim")
    args = ap.parse_args(argv)
    from onnxslim.graph import load_model
    from onnxslim.passes import cleanup
    theirs = external(args.onnxslim_python) if args.onnxslim_python else None
    for path in args.models:
        model = load_model(path)
        row = {"model": Path(path).name, "nodes_before": len(model.graph.node)}
        start = time.perf_counter()
        result = cleanup.run(model)
        row.update(ours_nodes=len(result.model.graph.node), ours_seconds=round(time.perf_counter() - start, 2),
                   ours_rules=result.report["rules"])
        if theirs is not None:
            before = theirs.tool_seconds
            try:
                row["onnxslim_nodes"] = len(theirs(onnx.load(path)).graph.node)
            except Exception as err:  # noqa: BLE001 - a refusal is a result
                row["onnxslim_error"] = str(err)[:160]
            row["onnxslim_seconds"] = round(theirs.tool_seconds - before, 2)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
