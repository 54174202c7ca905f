"""The pruning oracle on real exports with attention heads (issue 13): cleanup, channel analysis, a random plan
that removes heads in every head group (and FFN features), the pruned model checked by onnx.checker and
compared with the masked original (removed units zeroed at the exits) on random inputs. One JSON line per
model: head groups, heads kept, MACs fraction, max |pruned - masked| relative to max |masked|.

    python benchmarks/check_heads_oracle.py ~/.cache/onnxslim-bench/models/torchvision__vit_b_16.onnx ...
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onnxslim.channels import analyze  # noqa: E402
from onnxslim.cost import model_cost  # noqa: E402
from onnxslim.ops.heads import head_layout  # noqa: E402
from onnxslim.inputs import random_feeds  # noqa: E402
from onnxslim.passes import cleanup  # noqa: E402
from onnxslim.passes.prune.allocate import keep_every_space_nonempty  # noqa: E402
from onnxslim.passes.prune.apply import apply_plan, masked_model  # noqa: E402
from onnxslim.runshapes import choose  # noqa: E402


def run(model, feed):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)


def main():
    rng = np.random.default_rng(0)
    for path in sys.argv[1:]:
        started = time.perf_counter()
        clean = cleanup.run(onnx.load(path)).model
        analysis = analyze(clean)
        plan, heads = {}, []
        for g in analysis.prunable_groups:
            layout = head_layout(analysis, g)
            mask = g.frozen | (rng.random(g.n_classes) < (0.6 if layout else 0.8))
            plan[g.id] = keep_every_space_nonempty(g, mask, rng.random(g.n_classes))
            if layout:
                heads.append((int(plan[g.id].sum()), g.n_classes, layout[1]))
        masked = masked_model(analysis, plan, clean)
        pruned = apply_plan(analyze(clean), plan, clean)
        onnx.checker.check_model(pruned, full_check=True)
        shapes = choose(clean, None).shapes or None  # dynamic dims: a size the model runs with
        feed = random_feeds(clean, shapes, count=1, seed=1)[0]
        expect, got = run(masked, feed), run(pruned, feed)
        err = max(float(np.abs(e - g).max()) / max(float(np.abs(e).max()), 1e-6) for e, g in zip(expect, got))
        print(json.dumps({"model": Path(path).stem, "head_groups": len(heads), "heads_kept_of": heads,
                          "macs_fraction": round(model_cost(pruned, shapes)["macs"] / model_cost(clean, shapes)["macs"], 4),
                          "max_relative_error": err, "shapes_equal": all(e.shape == g.shape for e, g in zip(expect, got)),
                          "seconds": round(time.perf_counter() - started, 1)}), flush=True)


if __name__ == "__main__":
    main()
