"""The low-rank pass's report: per layer the scheme, rank, MACs and the errors at every rank tried, and why
a layer was kept whole."""
from __future__ import annotations

import numpy as np

from . import factor
from .select import candidate_ranks, layer_macs, split_macs


def report_layers(report, layers, shapes, curves, chosen, stats, patches, fitted, config, fits=None) -> None:
    """`fits`: the fits already made on `stats` (reused rather than recomputed)."""
    fits = fits or {}
    before = after = 0
    ratios = []
    for layer in layers:
        option = chosen[layer.name]
        base = layer_macs(layer, shapes[layer.name])
        before += base
        after += option.macs
        entry = {"name": layer.name, "op": layer.node.op_type, "in": layer.in_features, "out": layer.out_features,
                 "scheme": option.scheme, "rank": option.rank if option.scheme else None,
                 "full_rank": min(layer.in_features, layer.out_features), "macs_before": int(base), "macs_after": int(option.macs)}
        # the error at every rank tried (those that save MACs), per scheme
        entry["errors_by_rank"] = {
            scheme: {int(r): round(float(curve[r]), 6) for r in candidate_ranks(len(curve) - 1, config.round_to)
                     if split_macs(layer, shapes[layer.name], scheme, r) < base}
            for scheme, curve in curves[layer.name].items()}
        if option.scheme is None:
            entry["kept_because"] = _keep_reason(layer, entry, config)
            if layer.name in fitted:  # left whole but refitted (correct_unsplit)
                entry["corrected"] = True
                entry["error_fitted"] = round(fitted[layer.name], 6)
        else:
            entry["error"] = round(option.error, 6)
            st = stats.get(layer.name)
            if st is not None and option.scheme != "spatial":
                weight_err = float(factor.weight_svd_errors(layer.weight, st.czz)[1][option.rank])
                data_err = option.error
                if st.metric is not None:
                    # fitted for the attention logits; the data-aware vs weight SVD comparison stays on plain
                    # output error: data-aware SVD without the metric, and the applied fit's plain error
                    plain = factor.OutputStats(st.czz, st.czy, st.cyy, st.mean_z, st.mean_y)
                    data_err = float(factor.reduced_rank_fit(plain, config.ridge).errors[option.rank])
                    left, right, _ = factor.projection_at(fits.get(layer.name) or factor.reduced_rank_fit(st, config.ridge), st, option.rank)
                    entry["error_attention_metric"] = round(option.error, 6)
                    entry["error_applied_plain"] = round(factor.plain_error(st, left, right), 6)
                entry["error_weight_svd"] = round(weight_err, 6)
                entry["error_data_aware"] = round(data_err, 6)
                if weight_err > 1e-9:
                    ratios.append(data_err / weight_err)
            pt = patches.get(layer.name)
            if pt is not None and option.scheme == "spatial":
                weight_err = _spatial_weight_only_error(layer, pt, option.rank)
                entry["error_weight_svd"] = round(weight_err, 6)
                entry["error_data_aware"] = round(option.error, 6)
                if weight_err > 1e-9:
                    ratios.append(option.error / weight_err)
            if layer.name in fitted:
                entry["error_fitted"] = round(fitted[layer.name], 6)
        report["layers"].append(entry)
    report["macs_before"] = int(before)
    report["macs_after"] = int(after)
    report["fraction"] = round(after / before, 4) if before else 1.0
    report["factorized"] = sum(1 for layer in layers if chosen[layer.name].scheme is not None)
    if ratios:
        report["data_aware_over_weight_svd_error"] = {"median": round(float(np.median(ratios)), 4),
                                                      "max": round(float(np.max(ratios)), 4)}


def _spatial_weight_only_error(layer, patches, rank) -> float:
    """Output error on the calibration patches of weight-only spatial SVD (same bias correction)."""
    vertical, horizontal, _ = factor.spatial_factors(layer.kernel, rank)
    kernel = np.einsum("rcik,orkj->ocij", vertical, horizontal)
    d = layer.weight - kernel.reshape(kernel.shape[0], -1).T
    total = max(float(np.sum(layer.weight * (patches.cov @ layer.weight))), 1e-30)
    return float(np.sum(d * (patches.cov @ d))) / total


def _keep_reason(layer, entry, config) -> str:
    tried = entry["errors_by_rank"]
    if not any(tried.values()):
        return "no rank saves MACs for this shape"
    if layer.name in config.exclude:
        return "excluded"
    if config.energy is not None:
        return f"the rank keeping {config.energy:.0%} of the energy saves no MACs (flat spectrum)"
    return "every rank that saves MACs costs more error per MAC than the budget's price (flat spectrum)"
