"""Behaviour unchanged? Compare every run in RUNS/new with RUNS/ref (as benchmarks/behaviour_runs.sh writes them): exit code, stdout table (minus timings), report JSON (numbers
within 1e-6 relative, timing keys ignored), and the output model (byte-identical, else outputs on seeded
random inputs equal within float rounding)."""
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs")
TIMING = re.compile(r"second|time|latency|_ms$|^ms$|elapsed|profile", re.I)


def numbers_close(a, b, path, diffs):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in set(a) | set(b):
            if TIMING.search(str(k)):
                continue
            if k not in a or k not in b:
                diffs.append(f"{path}.{k}: only in {'ref' if k in a else 'new'}")
                continue
            numbers_close(a[k], b[k], f"{path}.{k}", diffs)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            diffs.append(f"{path}: list length {len(a)} vs {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            numbers_close(x, y, f"{path}[{i}]", diffs)
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if not (a == b or (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-6 * max(abs(a), abs(b)) + 1e-9):
            diffs.append(f"{path}: {a} vs {b}")
    elif a != b:
        diffs.append(f"{path}: {str(a)[:80]!r} vs {str(b)[:80]!r}")


def feeds(model):
    rng = np.random.default_rng(0)
    out = {}
    inits = {t.name for t in model.graph.initializer}
    for i in model.graph.input:
        if i.name in inits:
            continue
        t = i.type.tensor_type
        shape = [d.dim_value if d.dim_value > 0 else (2 if k == 0 else 8) for k, d in enumerate(t.shape.dim)]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
        if np.issubdtype(dtype, np.integer):
            # token ids in 0..99; masks all ones; token types (and other small-range ints) zeros
            low, high = (0, 1) if "type" in i.name else ((1, 2) if "mask" in i.name else (0, 100))
            out[i.name] = rng.integers(low, high, shape).astype(dtype)
        else:
            out[i.name] = rng.standard_normal(shape).astype(dtype)
    return out


def outputs_equal(ref_path, new_path):
    a = onnx.load(str(ref_path))
    f = feeds(a)
    ra = ort.InferenceSession(str(ref_path), providers=["CPUExecutionProvider"]).run(None, f)
    rb = ort.InferenceSession(str(new_path), providers=["CPUExecutionProvider"]).run(None, f)
    worst = 0.0
    for x, y in zip(ra, rb):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.shape != y.shape:
            return f"shape {x.shape} vs {y.shape}"
        scale = max(float(np.abs(x).max()) if x.size else 0.0, 1e-12)
        worst = max(worst, float(np.abs(x - y).max()) / scale if x.size else 0.0)
    return worst


def table(path):
    lines = path.read_text().splitlines() if path.exists() else []
    # measured timings (the latency model's profile, "total N s") vary run to run: masked
    lines = [re.sub(r"[\d.]+ of [\d.]+ ms profiled", "X of Y ms profiled", l) for l in lines]
    return [re.sub(r"\d+\.\d+ s\b", "T s", l) for l in lines if not l.startswith("total ")]


def main():
    names = sys.argv[2:] or sorted(p.name for p in (ROOT / "new").iterdir())
    bad = compared = 0
    for name in names:
        r, n = ROOT / "ref" / name, ROOT / "new" / name
        if not (r / "rc").exists() or not (n / "rc").exists():
            print(f"{name:28s} (not run on both)")
            continue
        notes = []
        compared += 1
        if r.joinpath("rc").read_text() != n.joinpath("rc").read_text():
            notes.append(f"exit {r.joinpath('rc').read_text().strip()} vs {n.joinpath('rc').read_text().strip()}")
        model = "no model"
        if (r / "out.onnx").exists() and (n / "out.onnx").exists():
            if (r / "out.onnx").read_bytes() == (n / "out.onnx").read_bytes():
                model = "model identical"
            else:
                worst = outputs_equal(r / "out.onnx", n / "out.onnx")
                model = f"model differs, outputs rel. max diff {worst:.2e}" if not isinstance(worst, str) else f"model differs: {worst}"
                if isinstance(worst, str) or worst > 1e-4:
                    notes.append(model)
        diffs = []
        if (r / "report.json").exists():
            numbers_close(json.loads((r / "report.json").read_text()), json.loads((n / "report.json").read_text()), "report", diffs)
        if diffs:
            notes.append(f"report: {len(diffs)} differences, first: {diffs[:3]}")
        if table(r / "stdout.txt") != table(n / "stdout.txt"):
            notes.append("terminal table differs")
        bad += bool(notes)
        print(f"{name:28s} {'SAME' if not notes else 'DIFF'}  {model}" + ("".join(f"\n    {x}" for x in notes)))
    print(f"{compared - bad} of {compared} runs compared are the same")


if __name__ == "__main__":  # python benchmarks/compare_runs.py RUNS [case ...]
    main()
