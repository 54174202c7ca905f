"""Markdown tables of a bench_real_models.py run (JSON lines): one row per model, and the failures.

    python benchmarks/real_models_table.py benchmarks/results/real_models_after.jsonl
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

COMMANDS = ["bare", "inspect", "prune 0.3", "lowrank 0.9", "int8-dynamic", "int8", "target-macs 0.7"]


def load(path: Path) -> list[dict]:
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            rows[rec["model"]] = rec  # a re-run of a model replaces its earlier row
    return list(rows.values())


def _cell(row: dict | None) -> str:
    if row is None:
        return "-"
    if row["exit"] == 0:
        return "ok"
    return "timeout" if row["exit"] is None else f"exit {row['exit']}"


def _ext(rec: dict) -> tuple[str, str, str]:
    ext = rec.get("onnxslim_pypi") or {}
    if "nodes" not in ext:
        return "error", "-", "-"
    equal = {True: "yes", False: "no", None: "not run"}[ext.get("equal")]
    return str(ext["nodes"]), f"{ext['seconds']:.1f}", equal


def table(records: list[dict]) -> str:
    head = ["model", "dynamic inputs", "nodes", *COMMANDS, "bare nodes / s", "OnnxSlim nodes / s", "OnnxSlim equal"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rec in records:
        ours = rec["ours"]
        bare = ours.get("bare") or {}
        bare_cell = f"{bare.get('nodes_after')} / {bare.get('seconds')}" if bare.get("exit") == 0 else "-"
        ext_nodes, ext_secs, ext_equal = _ext(rec)
        cells = [rec["model"].replace("__", " "), " ".join(rec["inputs"]), str(rec["nodes_before"]),
                 *(_cell(ours.get(c)) for c in COMMANDS), bare_cell, f"{ext_nodes} / {ext_secs}", ext_equal]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def counts(records: list[dict]) -> str:
    runs = [r for rec in records for r in rec["ours"].values()]
    refused_all = [rec["model"] for rec in records if all(r["exit"] != 0 for r in rec["ours"].values())]
    dyn_refusals = sum("dynamic dim" in (r.get("error") or "") for r in runs)
    ok = sum(r["exit"] == 0 for r in runs)
    return (f"{len(records)} models, {len(runs)} runs: {ok} exit 0, {len(runs) - ok} not; "
            f"{dyn_refusals} refused for a dynamic dim; {len(refused_all)} models refused by every command")


def failures(records: list[dict]) -> str:
    lines = []
    for rec in records:
        for name, r in rec["ours"].items():
            if r["exit"] != 0:
                lines.append(f"- {rec['model']} `{name}`: {r.get('error') or 'no message'}")
    return "\n".join(lines) or "(none)"


def print_summary(path: Path) -> None:
    records = load(Path(path))
    print(counts(records))
    print()
    print(table(records))
    print()
    print(failures(records))


if __name__ == "__main__":
    print_summary(Path(sys.argv[1]))
