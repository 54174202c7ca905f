"""Every pass on real models with dynamic dims, without --input-shape; OnnxSlim (PyPI) on the same models.

    python benchmarks/fetch_real_models.py [--torchvision]     # the corpus, into the cache
    python benchmarks/bench_real_models.py --out benchmarks/results/real_models_after.jsonl \
        [--models DIR] [--extra /path/a.onnx ...] [--onnxslim-venv DIR] [--timeout 300]

Per model and command: exit code, the error line, node count after, seconds. OnnxSlim runs in its own venv
(the package names clash): node count, seconds, and whether its outputs equal the original's on random
inputs. Writes JSON lines; `--summary FILE.jsonl` prints the markdown table of a finished run.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from fetch_real_models import default_cache  # noqa: E402

COMMANDS = {
    "bare": [],
    "inspect": None,
    "prune 0.3": ["--prune", "0.3"],
    "lowrank 0.9": ["--lowrank", "0.9"],
    "int8-dynamic": ["--quantize", "int8-dynamic"],
    "int8": ["--quantize", "int8"],
    "target-macs 0.7": ["--target-macs", "0.7"],
}

# Run inside OnnxSlim's venv: slim, then compare outputs on random inputs at the shapes our tool chose
# (or 1 for every dynamic dim when none), so both tools are judged on the same feeds.
EXT = r'''
import json, sys, time, numpy as np, onnx, onnxruntime as ort, onnxslim
src, dst = sys.argv[1], sys.argv[2]
t = time.perf_counter(); onnxslim.slim(src, dst); secs = time.perf_counter() - t
m = onnx.load(dst, load_external_data=False)
out = {"nodes": len(m.graph.node), "seconds": round(secs, 2)}
try:
    shapes = json.loads(sys.argv[3])
    so = ort.SessionOptions(); so.log_severity_level = 3
    a = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(dst, so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0); feed = {}
    types = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float16)": np.float16}
    for i in a.get_inputs():
        shape = shapes.get(i.name) or [d if isinstance(d, int) else 1 for d in i.shape]
        dt = types.get(i.type, np.float32)
        feed[i.name] = rng.standard_normal(shape).astype(dt) if np.issubdtype(dt, np.floating) else np.ones(shape, dt)
    ra, rb = a.run(None, feed), b.run(None, feed)
    out["equal"] = all(x.shape == y.shape and np.allclose(x, y, rtol=1e-3, atol=1e-4) for x, y in zip(ra, rb))
except Exception as err:
    out["equal"] = None; out["compare_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:150]}"
print(json.dumps(out))
'''


def node_count(path: Path) -> int | None:
    import onnx
    try:
        return len(onnx.load(str(path), load_external_data=False).graph.node)
    except Exception:
        return None


def error_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.startswith("onnxslim: error") or "Error" in ln]
    return (lines[-1] if lines else (text.strip().splitlines() or [""])[-1])[:240]


def run_ours(model: Path, name: str, args, tmp: Path, timeout: int) -> dict:
    out, report = tmp / "out.onnx", tmp / "report.json"
    for p in (out, report):
        p.unlink(missing_ok=True)
    if args is None:
        cmd = [sys.executable, "-m", "onnxslim.cli", "inspect", str(model)]
    else:
        cmd = [sys.executable, "-m", "onnxslim.cli", str(model), str(out), "-q", "--report", str(report), *args]
    if name == "int8" or name == "target-macs 0.7":
        cmd += ["--calib-size", "16"]
    start = time.perf_counter()
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        code, err = run.returncode, ("" if run.returncode == 0 else error_line(run.stderr))
    except subprocess.TimeoutExpired:
        code, err = None, f"timeout after {timeout}s"
    row = {"command": name, "exit": code, "error": err, "seconds": round(time.perf_counter() - start, 2),
           "nodes_after": node_count(out) if out.exists() else None}
    if report.exists():
        val = json.loads(report.read_text()).get("validation") or {}
        row["validation"] = {k: val.get(k) for k in ("skipped", "input_shapes") if k in val}
        row["cosine"] = min((o.get("cosine", 1.0) for o in (val.get("outputs") or {}).values()), default=None)
    return row


def run_ext(model: Path, venv: Path, tmp: Path, shapes: dict, timeout: int) -> dict:
    script = tmp / "ext.py"
    script.write_text(EXT)
    try:
        run = subprocess.run([str(venv / "bin" / "python"), str(script), str(model), str(tmp / "ext.onnx"), json.dumps(shapes)],
                             capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout}s"}
    if run.returncode != 0:
        return {"error": error_line(run.stderr)}
    return json.loads(run.stdout.strip().splitlines()[-1])


def dynamic_dims(model: Path) -> list[str]:
    import onnx
    m = onnx.load(str(model), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    out = []
    for vi in m.graph.input:
        if vi.name not in inits:
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]
            out.append(f"{vi.name}{dims}".replace(" ", "").replace("'", ""))
    return out


def bench_model(model: Path, args, tmp: Path) -> dict:
    rec = {"model": model.name, "inputs": dynamic_dims(model), "nodes_before": node_count(model), "ours": {}}
    for name, cmd in COMMANDS.items():
        rec["ours"][name] = run_ours(model, name, cmd, tmp, args.timeout)
        print(f"  {model.name} {name}: exit {rec['ours'][name]['exit']} {rec['ours'][name]['error'][:100]}", flush=True)
    shapes = {}
    for row in rec["ours"].values():
        for inp, info in ((row.get("validation") or {}).get("input_shapes") or {}).items():
            shapes.setdefault(inp, info.get("shape") if isinstance(info, dict) else info)
    if args.onnxslim_venv:
        rec["onnxslim_pypi"] = run_ext(model, args.onnxslim_venv, tmp, shapes, args.timeout)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=Path, default=default_cache() / "models")
    ap.add_argument("--extra", type=Path, nargs="*", default=[])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--onnxslim-venv", type=Path, default=None)
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--only", nargs="*", help="model file names to run")
    ap.add_argument("--summary", type=Path, help="print the markdown table of a finished run and exit")
    args = ap.parse_args()
    if args.summary:
        from real_models_table import print_summary
        print_summary(args.summary)
        return
    models = sorted(args.models.glob("*.onnx")) + list(args.extra)
    if args.only:
        models = [m for m in models if m.name in args.only]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, args.out.open("a") as fh:
        for model in models:
            rec = bench_model(model, args, Path(tmp))
            fh.write(json.dumps(rec) + "\n")
            fh.flush()


if __name__ == "__main__":
    main()
