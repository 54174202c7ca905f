"""What each library's way of reading and writing a model with external data costs in peak memory (issue 14,
"weights stay on disk"): one child process per method, its own ru_maxrss; a JSON line each.

  onnxslim_load     onnxslim.graph.load_model (reads every weight into the proto, checks the model)
  onnx_load         onnx.load with its external data
  onnx_load_no_data onnx.load(load_external_data=False): the graph only
  gs_import         onnx.load + onnx_graphsurgeon.import_onnx + export_onnx (what every pass does today)
  ir_load           onnx_ir.load: external tensors stay memory-mapped, shapes known without IO
  ir_load_touch     onnx_ir.load and read every weight once (numpy sum over the mapping: file pages count in RSS)
  ir_roundtrip      onnx_ir.load + onnx_ir.save to a new file with external data (streams the tensors)
  ort_session       onnxruntime.InferenceSession on the path (the runtime's own copy of the weights)

    python benchmarks/bench_load_memory.py /tmp/onnxslim-large/decoder_0.5gb.onnx
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

METHODS = {
    "onnxslim_load": "from onnxslim.graph import load_model; m = load_model(P)",
    "onnx_load": "import onnx; m = onnx.load(P)",
    "onnx_load_no_data": "import onnx; m = onnx.load(P, load_external_data=False)",
    "gs_import": "import onnx, onnx_graphsurgeon as gs; g = gs.import_onnx(onnx.load(P)); m = gs.export_onnx(g)",
    "ir_load": "import onnx_ir as ir; m = ir.load(P); n = sum(v.const_value.size for v in m.graph.initializers.values())",
    "ir_load_touch": ("import onnx_ir as ir; m = ir.load(P)\n"
                      "s = 0.0\nfor v in m.graph.initializers.values(): s += float(v.const_value.numpy().sum())"),
    "ir_roundtrip": ("import onnx_ir as ir, os; m = ir.load(P)\n"
                     "ir.save(m, OUT, external_data=os.path.basename(OUT) + '.data')"),
    "ort_session": ("import onnxruntime as ort; o = ort.SessionOptions(); o.log_severity_level = 3\n"
                    "s = ort.InferenceSession(P, o, providers=['CPUExecutionProvider'])"),
}


def measure(code: str, model: str, out: str) -> dict:
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", f"P = {model!r}\nOUT = {out!r}\n{code}"], stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().strip().splitlines()
    return {"exit": os.waitstatus_to_exitcode(status), "seconds": round(time.perf_counter() - start, 2),
            "peak_rss_gib": round(usage.ru_maxrss / 2**20, 3), "error": err[-1] if err and status else ""}


def main():
    model = Path(sys.argv[1])
    methods = sys.argv[2].split(",") if len(sys.argv) > 2 else list(METHODS)
    size = sum(p.stat().st_size for p in model.parent.glob(model.name + "*") if p.is_file())
    baseline = measure("import onnx, onnx_ir, onnxruntime, onnx_graphsurgeon, onnxslim.graph", str(model), "")
    print(json.dumps({"model": model.name, "bytes": size, "imports_only_rss_gib": baseline["peak_rss_gib"]}), flush=True)
    with tempfile.TemporaryDirectory(dir=model.parent) as tmp:
        for name in methods:
            result = measure(METHODS[name], str(model), str(Path(tmp) / "out.onnx"))
            print(json.dumps({"method": name, **result, "rss_over_model": round(result["peak_rss_gib"] * 2**30 / size, 2)}), flush=True)
            for p in Path(tmp).iterdir():
                p.unlink()


if __name__ == "__main__":
    main()
