"""Folding engines measured on the ONNX node cases and on models: onnx-graphsurgeon's fold (our cleanup before
issue 10), onnxscript's optimizer (constant folding on onnx-ir, fold only and full), onnxruntime's
basic-level offline optimization.

    python benchmarks/bench_fold_engines.py cases ENGINE [--details FILE.jsonl]
    python benchmarks/bench_fold_engines.py models ENGINE MODEL.onnx ...

Prints JSON: outcome counts and seconds (cases), or node count after and seconds per model (models).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import node_cases  # noqa: E402


def _engine_gs(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnx_graphsurgeon as gs
    graph = gs.import_onnx(model)
    graph.fold_constants(fold_shapes=True, partitioning="recursive", error_ok=True)
    graph.cleanup().toposort()
    out = gs.export_onnx(graph, do_type_check=False)
    del out.opset_import[:]
    out.opset_import.extend(model.opset_import)
    out.ir_version = model.ir_version
    return out


def _engine_onnxscript_fold(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnx_ir as ir
    import onnx_ir.passes.common as common
    from onnxscript.optimizer import fold_constants
    irm = ir.serde.deserialize_model(model)
    common.InlinePass()(irm)
    fold_constants(irm, onnx_shape_inference=True)
    common.RemoveUnusedNodesPass()(irm)
    common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0)(irm)
    return ir.serde.serialize_model(irm)


def _engine_onnxscript_full(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxscript.optimizer
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return onnxscript.optimizer.optimize(copy)


def _engine_ort_basic(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "opt.onnx")
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        opts.optimized_model_filepath = path
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        return onnx.load(path)


def _engine_ours(model: onnx.ModelProto) -> onnx.ModelProto:
    from onnxslim.passes import cleanup
    return cleanup.run(model).model


ENGINES = {"gs": _engine_gs, "onnxscript-fold": _engine_onnxscript_fold, "onnxscript": _engine_onnxscript_full,
           "ort-basic": _engine_ort_basic, "ours": _engine_ours}


def _refusing(engine):
    """Any exception of the engine counts as a refusal (SlimError) in the node-case classification."""
    def run(model):
        from onnxslim.errors import SlimError
        try:
            return engine(model)
        except Exception as err:
            raise SlimError(f"{type(err).__name__}: {str(err)[:150]}") from None
    return run


def cases(engine: str, details: str | None) -> dict:
    optimizer = _refusing(ENGINES[engine])
    counts: collections.Counter = collections.Counter()
    out = open(details, "w") if details else None
    start = time.perf_counter()
    for case in node_cases.load_cases():
        outcome = node_cases.run_case(case, optimizer)
        counts[outcome.status] += 1
        if out:
            out.write(json.dumps(outcome.__dict__) + "\n")
    return {"engine": engine, **{s: counts[s] for s in node_cases.STATUSES}, "seconds": round(time.perf_counter() - start, 1)}


def models(engine: str, paths: list[str]) -> list[dict]:
    rows = []
    for path in paths:
        model = onnx.load(path)
        start = time.perf_counter()
        try:
            out = ENGINES[engine](model)
            after, error = len(out.graph.node), ""
        except Exception as err:
            after, error = None, f"{type(err).__name__}: {str(err)[:120]}"
        rows.append({"engine": engine, "model": Path(path).name, "nodes_before": len(model.graph.node),
                     "nodes_after": after, "seconds": round(time.perf_counter() - start, 2), "error": error})
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["cases", "models"])
    ap.add_argument("engine", choices=sorted(ENGINES))
    ap.add_argument("paths", nargs="*")
    ap.add_argument("--details")
    args = ap.parse_args(argv)
    result = cases(args.engine, args.details) if args.what == "cases" else models(args.engine, args.paths)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
