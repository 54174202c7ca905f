"""The default importance with real calibration data and a target: the better of several criteria, measured.

Neither criterion wins everywhere (issue 11, EfficientNet-Lite0 on 700 held-out images: l1 81.9% vs
reconstruction 74.4% top-1 at 80% of the MACs, 55.6% vs 68.0% at 70%), so the default builds a complete
plan (allocation and repair) with each on the first calibration samples and keeps the one whose outputs
stay closest to the original model's on the last samples, which no plan was fitted or chosen on.
"""
from __future__ import annotations

import dataclasses


from onnxslim.activations import make_session
from onnxslim.context import Context, PassResult

from .evaluate import fidelity_summary, output_loss

CANDIDATES = ("l1", "reconstruction")
MIN_SAMPLES = 16        # fewer calibration samples: no split, the default is l1
HELD_OUT_SHARE = 0.25   # of the calibration samples, at least 8, compare the plans


def can_choose(dataset) -> bool:
    return dataset is not None and getattr(dataset, "real", False) and hasattr(dataset, "take") and len(dataset) >= MIN_SAMPLES


def best_of(model, config, ctx: Context, run_one) -> PassResult:
    """run_one(model, config, ctx) -> PassResult for each candidate criterion on the fitting samples; the
    result with the lowest held-out loss (evaluate.output_loss) is returned, its report saying why."""
    data = ctx.calibration
    held = max(8, int(round(len(data) * HELD_OUT_SHARE)))
    fit, check = data.take(0, len(data) - held), data.take(len(data) - held)
    batches = list(check.batches(config.calib_batch))
    reference = _outputs(model, batches)
    results, scores = {}, {}
    for criterion in CANDIDATES:
        sub = dataclasses.replace(ctx, calibration=fit)
        results[criterion] = run_one(model, dataclasses.replace(config, importance=criterion), sub)
        outputs = _outputs(results[criterion].model, batches)
        summary = fidelity_summary(reference, outputs)
        scores[criterion] = {"held_out_loss": round(output_loss(reference, outputs), 6),
                             **{k: v for k, v in summary.items() if k != "loss"}}
    best = min(CANDIDATES, key=lambda c: (scores[c]["held_out_loss"], CANDIDATES.index(c)))
    others = [scores[c]["held_out_loss"] for c in CANDIDATES if c != best]
    result = results[best]
    result.report["importance"] = best
    result.report["importance_choice"] = {
        "chosen": best, "candidates": scores, "fit_samples": len(fit), "held_out_samples": len(check),
        "margin": round(min(others) - scores[best]["held_out_loss"], 6) if others else None,
        "why": "default (no --importance): the criterion whose plan kept the held-out calibration outputs closest to the original's",
    }
    result.report["seconds"] = round(sum(r.report.get("seconds", 0) for r in results.values()), 2)
    return result


def _outputs(model, batches: list[dict]) -> list[dict]:
    sess = make_session(model)
    names = [o.name for o in sess.get_outputs()]
    return [dict(zip(names, sess.run(names, feed))) for feed in batches]


def describe(choice: dict) -> str:
    """One line for the terminal."""
    parts = []
    for name, score in choice["candidates"].items():
        agree = [v["top1_agreement"] for v in score.values() if isinstance(v, dict) and "top1_agreement" in v]
        parts.append(f"{name} {score['held_out_loss']:.4g}" + (f" (top-1 agreement {100 * agree[0]:.0f}%)" if agree else ""))
    return (f"importance {choice['chosen']}: the lower held-out loss on {choice['held_out_samples']} calibration samples "
            f"no plan was fitted on ({', '.join(parts)})")
