"""Low-rank splits of Gemm/MatMul and Conv layers (weight SVD or data-aware SVD), with rank selection.

`run(model, LowRankConfig(...), ctx) -> PassResult`. See factor.py for the math, select.py for rank choice.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from onnxslim.context import Context, PassResult
from onnxslim.errors import SlimError
from onnxslim.protocol import FLOAT32, NORMALIZED, Pass
from onnxslim.report_text import lowrank_table

from . import attention, factor, greedy, sensitivity
from .config import ALL_OPS, LowRankConfig
from .layers import Layer, find_layers
from .opened import OpenWeights
from .report import report_layers
from .rewrite import Editor
from .select import Option, allocate, by_energy, candidate_ranks, layer_macs, options_for, schemes_for, split_macs
from .stats import MAX_PATCH, OriginalOutputs, find_token_mask, layer_shapes, original_stats, paired_stats, patch_stats

def run(model: onnx.ModelProto, config: LowRankConfig, ctx: Context | None = None) -> PassResult:
    config.check()
    ctx = ctx or Context()
    layers, skipped = find_layers(model, set(config.ops), set(config.exclude))
    calib = ctx.calibration
    data_aware = config.data_aware if config.data_aware is not None else bool(calib is not None and getattr(calib, "real", False))
    if data_aware and calib is None:
        raise SlimError("low-rank: data-aware SVD needs calibration data (--calib)")
    report = {"pass": "lowrank", "mode": "energy" if config.energy is not None else "target_macs",
              "energy": config.energy, "target_macs": config.target_macs, "data_aware": data_aware,
              "sequential": bool(data_aware and config.sequential), "round_to": int(config.round_to),
              "conv_svd": config.conv_svd, "layers": [], "skipped": skipped}
    if not layers:
        report.update(macs_before=0, macs_after=0, fraction=1.0)
        return PassResult(model, report, modified=False)

    probe, shapes = layer_shapes(model, layers, calib, ctx, config.batch_size)
    skipped += [{"name": layer.name, "op": layer.node.op_type, "reason": "shape unknown"} for layer in layers if layer.name not in shapes]
    layers = [layer for layer in layers if layer.name in shapes]
    mask = find_token_mask(model, config.token_mask) if data_aware else None
    report["token_mask"] = mask
    stats = {}
    if data_aware:
        with ctx.progress("low-rank statistics", total=_batches(calib, config.batch_size)) as bar:
            stats = original_stats(model, layers, calib.batches(config.batch_size), mask, bar)
    if data_aware and config.attention_metric:
        layouts = attention.head_layouts(model, attention.find_pairs(model, layers), probe)
        report["attention_metric"] = attention.attach_metrics(stats, layouts)
    patches = {}  # data-aware spatial SVD: im2col input statistics of the Convs that may be split spatially
    spatial = [l for l in layers if "spatial" in schemes_for(l, config.conv_svd) and l.in_features <= MAX_PATCH]
    if data_aware and spatial:
        with ctx.progress("low-rank patch statistics", total=_batches(calib, config.batch_size)) as bar:
            patches = patch_stats(model, spatial, calib.batches(config.batch_size), bar)

    fits = {}  # data-aware fits on the original model, reused by the non-sequential rewrite
    curves = {layer.name: _curves(layer, stats.get(layer.name), config, fits, patches.get(layer.name)) for layer in layers}
    options = {}
    chosen = _choose(layers, shapes, curves, config, report, options)
    if options:
        _allocate_ranks(model, layers, chosen, options, (stats, fits, patches), config, ctx, data_aware, report)
    plan = [layer for layer in layers if chosen[layer.name].scheme is not None]

    fitted_errors = {}
    if plan:
        model_out, fitted_errors = _apply(model, plan, chosen, stats, fits, patches, data_aware, config, ctx, layers)
    else:
        model_out = model
    report_layers(report, layers, shapes, curves, chosen, stats, patches, fitted_errors, config, fits)
    return PassResult(model_out, report, modified=bool(plan))


def _allocate_ranks(model, layers, chosen, options, fitted_stats, config, ctx, data_aware, report) -> None:
    """Choose the ranks of the layers in `options` under the MACs target, into `chosen`: greedy steps measured
    on the compressed model, or a Lagrangian allocation weighted by measured sensitivities."""
    stats, fits, patches = fitted_stats
    calib = ctx.calibration
    fixed = sum(o.macs for o in chosen.values())
    budget = config.target_macs * (fixed + sum(opts[0].macs for opts in options.values())) - fixed
    allocation = config.allocation if config.allocation != "auto" else "lagrangian"
    if allocation == "greedy" and calib is not None:
        report["allocation"] = "greedy"
        feeds = greedy.calibration_feeds(calib, config.batch_size, config.allocation_batches)
        opened = greedy.OpenModel(model, [l for l in layers if l.name in options], feeds, config.sensitivity_outputs,
                                  config.allocation_loss)
        effective = _effective_weights(layers, stats, fits, patches, config, opened)
        picked, trace = greedy.greedy_allocate(opened, options, effective, budget,
                                               step=config.allocation_step, candidates=config.allocation_candidates,
                                               probe_error=config.probe_error, refine=config.allocation_refine,
                                               progress=ctx.progress)
        chosen.update(picked)
        report["allocation_trace"] = trace
        return
    report["allocation"] = "lagrangian"
    weights = dict(config.layer_weights)
    use_sensitivity = config.sensitivity if config.sensitivity is not None else data_aware
    if use_sensitivity and calib is not None:
        measured = _sensitivities(model, layers, options, stats, fits, patches, config, ctx)
        report["sensitivity"] = {k: float(f"{v:.4g}") for k, v in measured.items()}
        weights.update({k: weights.get(k, 1.0) * v for k, v in measured.items()})
    chosen.update(allocate(options, budget, weights))


def _effective_weights(layers, stats, fits, patches, config, opened):
    """effective(name, option) -> the open model's arrays for that layer at that option (W' = A B, bias + shift)."""
    by_name = {layer.name: layer for layer in layers}
    svds = {}

    def effective(name, option):
        layer = by_name[name]
        if option.scheme is None:
            return opened.set(name, layer.weight, layer.bias)
        r = option.rank
        if option.scheme == "spatial":
            vertical, horizontal, shift = _spatial(layer, r, patches.get(name))
            kernel = np.einsum("rcik,orkj->ocij", vertical, horizontal)
            bias = None if layer.bias is None else layer.bias + shift
            return opened.set(name, kernel.reshape(kernel.shape[0], -1).T, bias)
        st = stats.get(name)
        if st is not None:
            fit = fits.get(name) or factor.reduced_rank_fit(st, config.ridge)
            left, right, shift = factor.projection_at(fit, st, r)
        else:
            if name not in svds:
                svds[name] = factor.weight_svd_errors(layer.weight, None)[0]
            v = svds[name][:, :r]
            left, right, shift = v, v.T, np.zeros(layer.out_features)
        bias = None if layer.bias is None else layer.bias + shift
        return opened.set(name, layer.weight @ left @ right, bias)

    return effective


def _spatial(layer, rank, patches):
    """(vertical, horizontal, bias shift): data-aware with im2col statistics, else weight-only."""
    if patches is not None:
        vertical, horizontal, shift, _ = factor.data_aware_spatial(layer.kernel, patches, rank)
        return vertical, horizontal, shift
    vertical, horizontal, _ = factor.spatial_factors(layer.kernel, rank)
    return vertical, horizontal, np.zeros(layer.out_features)


def _batches(calib, batch_size) -> int:
    return -(-len(calib) // batch_size)


def _curves(layer: Layer, stats, config, fits, patches=None) -> dict[str, np.ndarray]:
    """Relative error at every rank, per scheme: output error on the data if data-aware, else weight error."""
    out = {}
    for scheme in schemes_for(layer, config.conv_svd):
        if scheme == "spatial":
            out[scheme] = (factor.spatial_errors(layer.kernel) if patches is None
                           else factor.data_aware_spatial_errors(layer.kernel, patches, config.round_to,
                                                                  extra=(config.ranks.get(layer.name),)))
        elif stats is not None:
            fit = factor.reduced_rank_fit(stats, config.ridge)
            fits[layer.name] = fit
            out[scheme] = fit.errors
        else:
            out[scheme] = factor.weight_svd_errors(layer.weight, None)[1]
    return out


def _choose(layers, shapes, curves, config, report, options) -> dict[str, Option]:
    """Fixed choices (explicit ranks, energy); for a MACs budget, fills `options` for the allocation."""
    chosen = {}
    for layer in layers:
        base = layer_macs(layer, shapes[layer.name])
        keep = Option(None, 0, base, 0.0)
        if not curves[layer.name]:
            chosen[layer.name] = keep
            report["skipped"].append({"name": layer.name, "op": layer.node.op_type, "reason": f"--conv-svd {config.conv_svd} does not apply to a {'x'.join(map(str, layer.kernel.shape[2:]))} kernel"})
            continue
        if layer.name in config.ranks:
            scheme, curve = next(iter(curves[layer.name].items()))
            r = int(config.ranks[layer.name])
            macs = split_macs(layer, shapes[layer.name], scheme, r)
            chosen[layer.name] = Option(scheme, r, macs, float(curve[min(r, len(curve) - 1)])) if macs < base else keep
        elif config.energy is not None:
            ranks = by_energy(curves[layer.name], config.energy, config.round_to)
            best = min((Option(s, r, split_macs(layer, shapes[layer.name], s, r), float(curves[layer.name][s][r]))
                        for s, r in ranks.items()), key=lambda o: o.macs)
            chosen[layer.name] = best if best.macs < base else keep
        elif config.target_macs is None:  # explicit ranks only: the other layers stay whole
            chosen[layer.name] = keep
        else:
            options[layer.name] = options_for(layer, shapes[layer.name], curves[layer.name], config.round_to, config.max_error)
    return chosen


def _weight_dtypes(model: onnx.ModelProto, layers) -> dict:
    """{weight initializer name: its numpy dtype} for the layers' weights."""
    names = {layer.node.input[1] for layer in layers}
    return {t.name: helper.tensor_dtype_to_np_dtype(t.data_type) for t in model.graph.initializer if t.name in names}


def _sensitivities(model, layers, options, stats, fits, patches, config, ctx) -> dict[str, float]:
    """Per layer, model output error per unit of layer error, each layer split alone near probe_error."""
    by_name = {layer.name: layer for layer in layers}
    probes = {}
    for name, opts in options.items():
        splits = [o for o in opts if o.scheme is not None and o.error > 0]
        if splits:
            probes[name] = min(splits, key=lambda o: abs(o.error - config.probe_error))

    opened = OpenWeights(model, [by_name[name] for name in probes], config.sensitivity_outputs)
    effective = _effective_weights(layers, stats, fits, patches, config, opened)
    with ctx.progress("low-rank sensitivity", total=len(probes)) as bar:
        return sensitivity.measure(model, opened, {k: o.error for k, o in probes.items()},
                                   lambda name: effective(name, probes[name]), ctx.calibration, config.batch_size,
                                   config.sensitivity_batches, bar, outputs=config.sensitivity_outputs)


def _apply(model, plan, chosen, stats, fits, patches, data_aware, config, ctx, all_layers=()):
    """Rewrite the planned layers; data-aware + sequential goes level by level on the compressed model."""
    dtypes = _weight_dtypes(model, plan)
    fitted = {}
    if not (data_aware and config.sequential):
        editor = Editor(model)
        for layer in plan:
            _split(editor, layer, chosen[layer.name], stats.get(layer.name), config, dtypes, fitted, fits.get(layer.name),
                   patches.get(layer.name))
        return editor.finish(), fitted
    calib = ctx.calibration
    mask = find_token_mask(model, config.token_mask)
    corrected = [layer for layer in all_layers if chosen[layer.name].scheme is None and layer.name in stats] \
        if config.correct_unsplit else []
    dtypes.update(_weight_dtypes(model, corrected))
    work = plan + corrected
    first_level = min(layer.level for layer in plan)
    groups = [[layer for layer in work if layer.level == level and (chosen[layer.name].scheme is not None or level > first_level)]
              for level in sorted({layer.level for layer in work})]  # nothing to correct before the first split
    needs = [[layer for layer in group if chosen[layer.name].scheme != "spatial"] for group in groups]
    original = OriginalOutputs(model, work, [layer for layers in needs for layer in layers],
                               calib.batches(config.batch_size), mask) if any(needs) else None
    current = model
    with ctx.progress("low-rank sequential fit", total=len(groups)) as bar:
        for group, needs_data in zip(groups, needs):
            paired = paired_stats(original, current, needs_data, calib.batches(config.batch_size), mask, stats) if needs_data else {}
            editor = Editor(current)
            for layer in group:
                if chosen[layer.name].scheme is None:
                    st = paired[layer.name]
                    fit = factor.reduced_rank_fit(st, config.ridge)
                    left, right, shift = factor.projection_at(fit, st, layer.out_features)
                    bias = None if layer.bias is None else layer.bias + shift
                    editor.replace_weights(layer, layer.weight @ left @ right, bias, dtypes.get(layer.node.input[1], np.float32))
                    fitted[layer.name] = float(fit.errors[layer.out_features])
                    continue
                _split(editor, layer, chosen[layer.name], paired.get(layer.name), config, dtypes, fitted,
                       patches=patches.get(layer.name))
            current = editor.finish()
            bar.update(1)
    return current, fitted


def _split(editor: Editor, layer: Layer, option: Option, stats, config, dtypes, fitted, fit=None, patches=None) -> None:
    dtype = dtypes.get(layer.node.input[1], np.float32)
    r = option.rank
    if option.scheme == "spatial":
        vertical, horizontal, shift = _spatial(layer, r, patches)
        bias = None if layer.bias is None else layer.bias + shift
        editor.split_conv_spatial(layer, vertical, horizontal, bias, dtype)
        return
    if stats is not None:
        fit = fit or factor.reduced_rank_fit(stats, config.ridge)
        left, right, shift = factor.projection_at(fit, stats, r)
        fitted[layer.name] = float(fit.errors[r])
    else:
        v, _ = factor.weight_svd_errors(layer.weight, None)
        r = min(r, v.shape[1])
        left, right, shift = v[:, :r], v[:, :r].T, np.zeros(layer.out_features)
    a, b = factor.output_space_factors(layer.weight, left, right)
    bias = None if layer.bias is None else layer.bias + shift
    if layer.kind == "conv":
        editor.split_conv_channels(layer, a, b, bias, dtype)
    else:
        editor.split_matmul(layer, a, b, bias, dtype)


class LowRankPass(Pass):
    name = "lowrank"
    config = LowRankConfig
    changes_layers = True
    preserved = required = frozenset({NORMALIZED, FLOAT32})
    run = staticmethod(run)  # the module's run(model, config, ctx)

    def summary(self, report: dict) -> list[str]:
        how = "data-aware" if report.get("data_aware") else "weight"
        return [f"lowrank: {report.get('factorized')} layers factorized ({how} SVD); their MACs x{report.get('fraction')}; "
                f"{len(report.get('skipped', []))} layers left as they are (see --report)"]

    def details(self, report: dict) -> list[str]:
        return lowrank_table(report)


PASS = LowRankPass()
