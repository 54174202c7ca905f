"""`onnxslim inspect MODEL`: channel groups (prunable and frozen, with the reason), MACs and params per layer.

Dynamic dims need no size: MACs are counted at a size the model is found to run with (onnxslim.runshapes),
else the nodes behind the dynamic dims count as unknown.
"""
from __future__ import annotations

import json

import click


def inspect_model(model, input_shape, as_json: bool, keep_bn: bool) -> None:
    """Print the channel groups, MACs and params of `model` (a path); MACs at a size it runs with."""
    from . import graph, inputs
    from .channels import analyze
    from .cost import model_cost
    from onnxslim.passes import cleanup

    from .runshapes import choose
    original = graph.load_model(model)
    shapes = inputs.parse_input_shapes(input_shape)
    # MACs need sizes for dynamic dims: a size the model runs with; else they stay symbolic (MACs unknown)
    run = choose(original, shapes)
    clean = cleanup.run(original, cleanup.CleanupConfig(fold_bn=not keep_bn)).model
    analysis = analyze(clean)
    cost = model_cost(clean, run.shapes or shapes or None)
    data = {
        "model": str(model),
        "input_shapes": run.report() or {"skipped": run.reason},
        "macs": cost["macs"], "params": cost["params"],
        "groups": [g.summary() for g in analysis.groups],
        "layers": [c for c in cost["per_node"] if c["macs"] or c["params"]],
        "summary": analysis.report(),
    }
    if as_json:
        from .cli import _json_default
        click.echo(json.dumps(data, indent=2, default=_json_default))
        return
    from .validate import _si
    s = data["summary"]
    click.echo(f"{model}: {_si(cost['macs'])} MACs, {_si(cost['params'])} params; {s['groups']} channel groups, "
               f"{s['prunable_groups']} prunable ({s['prunable_channels']} channels)")
    click.echo("\nchannel groups:")
    for g in analysis.groups:
        state = f"{g.prunable}/{g.n_classes} prunable" if g.prunable else f"frozen ({g.n_classes})"
        click.echo(f"  #{g.id:<3} {state:<20} {g.trace()}")
        for reason in g.reasons[:3]:
            click.echo(f"        why frozen: {reason}")
    at = ", ".join(f"{k}:{'x'.join(map(str, v['shape']))} ({v['source']})" for k, v in run.report().items())
    click.echo(f"\nlayers (MACs at {at or 'unknown sizes: ' + str(run.reason)}):")
    for c in data["layers"]:
        macs = "?" if c["macs"] is None else _si(c["macs"])
        click.echo(f"  {c['op_type']:<14} {macs:>8} MACs {_si(c['params']):>8} params  {c['name']}")
