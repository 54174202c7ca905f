"""Do two versions of the code write the same models? Runs the CLI (`--no-validate -q`) with each version's
code on PYTHONPATH, for each case, and prints one JSON line per case: SHA-256 of every output file, and of
the model with its external data read back inline and every initializer rebuilt from its values
(`content`: equal when only the file layout differs, inline vs external data).

    git archive main | tar -x -C /tmp/base && ln -s /tmp/base/passes /tmp/base/onnxslim/passes
    python benchmarks/same_outputs.py --base /tmp/base --case "m.onnx" --case "m.onnx --prune 0.3" ...

(the symlink: the package maps `onnxslim.passes` to `passes/`, which a plain PYTHONPATH does not.)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import onnx
import onnx.numpy_helper

ROOT = Path(__file__).resolve().parent.parent


def content(path: Path) -> str:
    model = onnx.load(str(path))  # external data read back into raw_data
    inits = [onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(t), t.name) for t in model.graph.initializer]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)  # values, dims, type and name only
    return hashlib.sha256(model.SerializeToString()).hexdigest()[:16]


def run(code: str, model: str, args: list[str], out: Path) -> dict | str:
    proc = subprocess.run([sys.executable, "-m", "onnxslim.cli", model, str(out), *args, "--no-validate", "-q"],
                          cwd=tempfile.gettempdir(), env={**os.environ, "PYTHONPATH": code}, capture_output=True, text=True)
    files = sorted(out.parent.glob(out.name + "*"))
    result = ({p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in files} | {"content": content(out)}
              if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr.strip()[-200:]}")
    for p in files:
        p.unlink()
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="folder with the base code (onnxslim/ with passes linked in)")
    ap.add_argument("--code", default=str(ROOT), help="folder with the code to compare (default: this checkout)")
    ap.add_argument("--case", action="append", required=True, help='"MODEL [CLI ARGS]"')
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="same-outputs-") as tmp:
        for i, case in enumerate(args.case):
            model, *cli = shlex.split(case)
            row = {"case": i, "model": Path(model).name, "args": " ".join(cli)}
            for label, code in (("base", args.base), ("code", args.code)):
                (Path(tmp) / label).mkdir(exist_ok=True)
                row[label] = run(code, model, cli, Path(tmp) / label / f"{i}.onnx")  # same names: comparable
            row["same_files"] = row["base"] == row["code"]
            row["same_content"] = all(isinstance(row[k], dict) for k in ("base", "code")) and row["base"]["content"] == row["code"]["content"]
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
