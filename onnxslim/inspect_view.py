"""`onnxslim inspect MODEL`: channel groups (prunable / frozen and why), MACs and params per layer.

Dynamic dims need no size: MACs are counted at a size the model is found to run with (onnxslim.runshapes),
else the nodes behind the dynamic dims count as unknown.
"""
from __future__ import annotations

import click

from .cost import model_cost
from onnxslim.passes import cleanup
from .channels import analyze
from .runshapes import choose
from .units import si
from .ops.heads import head_layout


def analysis_data(model_path, original, shapes, keep_bn: bool):
    """(the JSON-ready data, the channel analysis) of a model, after the same cleanup `optimize` runs."""

    run = choose(original, shapes)
    clean = cleanup.run(original, cleanup.CleanupConfig(fold_bn=not keep_bn)).model
    analysis = analyze(clean)
    cost = model_cost(clean, run.shapes or shapes or None)
    data = {
        "model": str(model_path),
        "input_shapes": run.report() or {"skipped": run.reason},
        "macs": cost["macs"], "params": cost["params"],
        "groups": [_summary(analysis, g) for g in analysis.groups],
        "layers": [c for c in cost["per_node"] if c["macs"] or c["params"]],
        "summary": analysis.report(),
    }
    return data, analysis


def _summary(analysis, group) -> dict:
    layout = head_layout(analysis, group)
    return {**group.summary(), **({"heads": layout[0], "head_dim": layout[1]} if layout else {})}


def group_state(group, layout: tuple[int, int] | None = None) -> str:
    """'256/256 prunable', 'frozen, 384 ch (32 units)', '12/12 heads prunable (384 ch, head dim 32)':
    channels are the tensor's width; a unit is what is removed at once (an attention head when `layout`,
    heads x head dim, says the group is one; a Reshape that splits channels otherwise ties one position
    of every slice into one unit)."""
    channels = group.channels
    if layout is not None:
        heads, dim = layout
        if group.prunable:
            return f"{group.prunable}/{heads} heads prunable ({channels} ch, head dim {dim})"
        return f"frozen, {heads} heads ({channels} ch, head dim {dim})"
    units = "" if group.n_classes == channels else f" ({group.n_classes} units)"
    if group.prunable:
        if group.n_classes == channels:
            return f"{group.prunable}/{channels} prunable"
        return f"{group.prunable}/{group.n_classes} units prunable ({channels} ch)"
    return f"frozen, {channels} ch{units}"


def render(data: dict, analysis) -> None:
    s = data["summary"]
    click.echo(f"{data['model']}: {si(data['macs'])} MACs, {si(data['params'])} params; {s['groups']} channel groups, "
               f"{s['prunable_groups']} prunable ({s['prunable_channels']} channels)")
    click.echo("\nchannel groups:")
    states = [group_state(g, head_layout(analysis, g)) for g in analysis.groups]
    width = max((len(x) for x in states), default=0)
    for g, state in zip(analysis.groups, states):
        click.echo(f"  #{g.id:<3} {state:<{width}}  {g.trace()}")
        for reason in g.reasons[:3]:
            click.echo(f"        why frozen: {reason}")
    used = data.get("input_shapes", {})
    chosen = {k: v for k, v in used.items() if isinstance(v, dict) and v["source"] != "model"}
    at = ", ".join(f"{k}:{'x'.join(map(str, v['shape']))} ({v['source']})" for k, v in chosen.items())
    if "skipped" in used:
        at = f"unknown sizes: {used['skipped']}"
    click.echo(f"\nlayers (MACs at {at or 'batch 1'}):")  # the model's own dims: as before
    rows = [(c["op_type"], "?" if c["macs"] is None else si(c["macs"]), si(c["params"]), c["name"]) for c in data["layers"]]
    op_w = max((len(r[0]) for r in rows), default=0)  # LayerNormalization is wider than a fixed column
    for op, macs, params, name in rows:
        click.echo(f"  {op:<{op_w}} {macs:>8} MACs {params:>8} params  {name}")
