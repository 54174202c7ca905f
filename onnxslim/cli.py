"""`onnxslim MODEL [OUTPUT] [options]` and `onnxslim inspect MODEL`: a thin layer over the API.

Bad input prints one line and exits 2; a result that fails --min-cosine exits 1; nothing is written then.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import traceback
from pathlib import Path

import click

from .errors import SlimError
from .options import check_options
from .pass_options import lowrank_config as _lowrank_config, quantize_config as _quantize_config
from .report_files import json_default as _json_default, write_report as _write_report

SUBCOMMANDS = ("optimize", "inspect")


class _DefaultToOptimize(click.Group):
    """`onnxslim model.onnx ...` means `onnxslim optimize model.onnx ...`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in SUBCOMMANDS and args[0] not in ("--help", "-h", "--version"):
            args = ["optimize", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_DefaultToOptimize, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="onnxslim")
def cli():
    """Make an ONNX model smaller and faster, and check it against the original in onnxruntime.

    \b
    onnxslim model.onnx -o slim.onnx --prune 0.3          # uniform channel pruning
    onnxslim model.onnx slim.onnx --target-macs 0.7       # prune until MACs <= 70%
    onnxslim model.onnx slim.onnx --target-latency 0.7    # until the profiled latency <= 70%
    onnxslim inspect model.onnx                           # channel groups, MACs, params
    """


@cli.command("optimize")
@click.argument("model", type=click.Path(dir_okay=True))
@click.argument("output", required=False, type=click.Path())
@click.option("-o", "--output", "output_opt", type=click.Path(), help="Output model (default: MODEL.slim.onnx beside it).")
# pruning
@click.option("--prune", "prune_ratio", type=float, help="Remove this fraction of channels in every prunable group.")
@click.option("--target-macs", type=float, help="Prune until MACs <= this fraction of the original.")
@click.option("--target-latency", type=float,
              help="Prune until the latency estimated from onnxruntime's per-node profile (1 thread) <= this fraction.")
@click.option("--importance", default="l1", show_default=True,
              help="Channel importance: l1, l2, bn, random; with --calib also activation, apoz, hrank, reconstruction, "
                   "or auto (with a target: plans from l1 and reconstruction compared on held-out calibration samples, "
                   "the better rebuilt on all; costs ~3 plan builds).")
@click.option("--allocation", default=None,
              help="For a target: global, uniform, sensitivity, search. Default: sensitivity with --calib data, else global.")
@click.option("--round-to", type=int, default=None, help="Kept widths are multiples of N (default 16), low-rank ranks too (default 8).")
@click.option("--min-channels", type=int, default=1, show_default=True, help="Never keep fewer channels in a group.")
@click.option("--exclude", multiple=True, help="Node name to leave untouched (repeatable).")
@click.option("--repair/--no-repair", default=None, help="Refit layers after pruning on calibration data (default: on with real --calib).")
@click.option("--search-time", type=float, default=None, help="Seconds for --allocation search.")
# calibration
@click.option("--calib", type=click.Path(), help="Calibration data: image folder (or one sub-folder per class), .npy or .npz.")
@click.option("--calib-size", type=int, show_default="all", help="Use the first N calibration samples (file name order).")
@click.option("--resize", type=int, show_default="crop x 256/224", help="Images: resize the shorter side to this.")
@click.option("--crop", type=int, show_default="the model's input size", help="Images: centre crop to this size.")
@click.option("--mean", show_default="0", help="Images: per-channel mean, e.g. 127 or 123.7,116.3,103.5 (after --scale).")
@click.option("--std", show_default="1", help="Images: per-channel std, e.g. 128 or 58.4,57.1,57.4 (after --scale).")
@click.option("--scale", type=float, show_default="1 if a --mean or --std is above 1 (0..255 values), else 1/255",
              help="Images: multiply 0..255 pixels by this first.")
@click.option("--layout", type=click.Choice(["NCHW", "NHWC"]), show_default="from the model's input shape", help="Images: tensor layout.")
@click.option("--no-data-check", is_flag=True,
              help="Skip the checks of --calib/--data (near-constant samples, values the first layer never saw, one predicted class).")
@click.option("--preprocess", "preprocess_file", type=click.Path(), help="JSON/TOML preprocessing file (default: MODEL.preprocess.json/.toml if present).")
# low-rank
@click.option("--lowrank", "lowrank_energy", type=float, help="Low-rank splits keeping this fraction of spectral energy.")
@click.option("--lowrank-target-macs", type=float, help="Low-rank: factorized layers' MACs at most this fraction.")
@click.option("--lowrank-ops", default="matmul,gemm,conv", show_default=True, help="Layer kinds to factorize.")
@click.option("--conv-svd", type=click.Choice(["channel", "spatial", "auto"]), default="auto", show_default=True)
# quantization
@click.option("--quantize", type=click.Choice(["int8", "int8-dynamic", "int4", "int8-weight"]),
              help="Quantize last: QDQ int8, dynamic int8, or weight-only blockwise int4 / int8 (MatMulNBits).")
@click.option("--block-size", type=int, help="int4/int8-weight: weights per scale (power of 2, >= 16; default 32).")
@click.option("--symmetric/--asymmetric", default=None, help="int4/int8-weight: no zero point (default: asymmetric).")
@click.option("--quantize-embeddings/--no-quantize-embeddings", default=None, help="int4/int8-weight: Gather tables too (default on).")
@click.option("--calib-method", type=click.Choice(["minmax", "percentile", "entropy"]), default=None, help="int8 activation ranges.")
@click.option("--target", "quant_target", type=click.Choice(["onnxruntime", "tensorrt"]), default=None, help="int8 QDQ form for this runtime.")
@click.option("--per-tensor", is_flag=True, help="int8: per-tensor weights instead of per-channel.")
@click.option("--no-cle", is_flag=True, help="int8: no cross-layer equalization.")
@click.option("--no-bias-correction", is_flag=True, help="int8: no bias correction.")
@click.option("--tolerance", type=float, help="int8: keep the most sensitive nodes in float until the output error is within this.")
@click.option("--fp16", is_flag=True, help="Float16 weights and compute; input/output types kept, overflow-prone ops left in float32.")
# validation and output
@click.option("--data", type=click.Path(), show_default="random inputs (a structure check, not accuracy)",
              help="Validation inputs: image folder (or one sub-folder per class; the --calib preprocessing), .npy or .npz.")
@click.option("--labels", type=click.Path(), help="Classes of the --data samples for top-1/top-5 accuracy: lines `file<TAB>class index` "
              "for an image folder, one class per line (or .npy) for arrays. Also read from class sub-folders or an .npz 'labels' array.")
@click.option("--val-size", type=int, default=64, show_default=True, help="Validate on the first N --data samples.")
@click.option("--input-shape", multiple=True, help="Concrete shape for a dynamic input, NAME:D1,D2,... (repeatable).")
@click.option("--no-validate", is_flag=True, help="Skip the comparison with the original.")
@click.option("--no-latency", is_flag=True, help="Validate outputs but do not time the models.")
@click.option("--threads", type=int, default=None,
              help="onnxruntime threads for the timings (validation, --target-latency's profile). Default: onnxruntime's for validation, 1 for the profile.")
@click.option("--min-cosine", type=float, help="Fail (exit 1, write nothing) if an output's cosine similarity is below this.")
@click.option("--size-threshold", type=int, default=None, metavar="BYTES",
              help="Constant folding never materializes a tensor larger than this; such folds are left as ops and "
                   "listed in the report. Default: twice the model's size, at least 64 MiB, at most 1 GiB.")
@click.option("--external-data", is_flag=True,
              help="Save the weights in OUTPUT.data beside the model (always done over 2 GB).")
@click.option("--report", "report_path", type=click.Path(), help="Write the full report: FILE.html a self-contained page with charts, else JSON.")
@click.option("--ort-format", is_flag=True, help="Also write OUTPUT.ort (onnxruntime's mobile format) and OUTPUT.required_operators.config, checked by running it.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="No table, no progress bars.")
def optimize_cmd(model, output, output_opt, **opts):
    """Optimize MODEL and write the result to OUTPUT (or -o)."""
    _guard(lambda: _optimize(model, output, output_opt, opts))


def _optimize(model, output, output_opt, o):
    from . import graph, inputs
    from .pipeline import optimize
    from .progress import progress, silent

    if output and output_opt and output != output_opt:
        raise SlimError(f"two output paths given ({output} and {output_opt})")
    src = Path(model)
    dst = Path(output or output_opt or src.with_name(src.stem + ".slim.onnx"))
    _check_paths(src, dst, o)
    check_options(o)
    if o["min_cosine"] is not None and o["no_validate"]:
        raise SlimError("--min-cosine needs validation; drop --no-validate")
    original = graph.load_model(src)
    shapes = inputs.parse_input_shapes(o["input_shape"])
    prune = _prune_config(o)
    lowrank = _lowrank_config(o)
    quantize = _quantize_config(o)
    if prune is None and lowrank is None and quantize is None and not o["fp16"]:
        click.echo("onnxslim: no pass requested (--prune, --target-macs, --lowrank, --quantize): cleanup and validation only", err=True)
    from .cli_data import datasets, preprocess_hint
    # dynamic int8 and the weight-only modes need no calibration (ranges at run time, weights alone): no
    # random-data warning for them
    static_int8 = quantize is not None and quantize.mode == "int8"
    need_calib = bool(o["calib"]) or static_int8 or (prune is not None and prune.importance in DATA_CRITERIA)
    calibration, data = datasets(src, original, shapes, o, need_calib)
    result = optimize(original, prune=prune, lowrank=lowrank, quantize=quantize, calibration=calibration,
                      data=data, input_shapes=shapes, validate=not o["no_validate"], shape_hints=preprocess_hint(src, original, o),
                      latency=not o["no_latency"], min_cosine=o["min_cosine"],
                      progress=silent if o["quiet"] else progress, seed=o["seed"], threads=o["threads"],
                      size_threshold=_size_threshold(o["size_threshold"]), fp16=o["fp16"],
                      val_size=o["val_size"], labels=o["labels"], check_data=not o["no_data_check"])
    result.report.update(model=str(src), output=str(dst), command=shlex.join(["onnxslim", *sys.argv[1:]]))
    graph.save_model(result.model, dst, input_path=src, external_data=o["external_data"])
    if o["ort_format"]:
        from .ort_format import write_ort
        try:
            result.report["ort_format"] = write_ort(dst, shapes, seed=o["seed"])
        except SlimError:
            dst.unlink(missing_ok=True)  # all or nothing
            raise
    if o["report_path"]:
        try:
            _write_report(Path(o["report_path"]), result.report)
        except OSError as err:
            dst.unlink(missing_ok=True)  # all or nothing
            raise SlimError(f"cannot write --report {o['report_path']}: {err.strerror or err}; nothing written") from None
    if not o["quiet"]:
        from .report_text import one_line
        click.echo(_summary(result.report))
        click.echo(f"wrote {dst}")
        ort = result.report.get("ort_format")
        if ort:
            diff = ort["max_relative_difference"]
            same = "the .onnx's outputs exactly" if diff == 0 else f"the .onnx's outputs within {diff:.1g} (relative)"
            click.echo(f"wrote {ort['ort']} and {Path(ort['required_operators']).name} (loaded and run in onnxruntime: {same})")
        click.echo(one_line(result.report))


def _size_threshold(value):
    if value is not None and value < 0:
        raise SlimError(f"--size-threshold {value}: give a number of bytes >= 0")
    return value


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _check_paths(src: Path, dst: Path, o) -> None:
    """Outputs never replace an input or each other, and can be written: checked before any work."""
    from .graph import model_files
    inputs = [("the input model", src)] + [("the input model's external data file", f) for f in model_files(src)[1:]]
    inputs += [(f"the --{k} file", Path(o[k])) for k in ("data", "calib", "labels") if o.get(k)]
    outputs = [("output", dst)] + ([("--report", Path(o["report_path"]))] if o["report_path"] else [])
    if o.get("ort_format"):
        from .ort_format import ort_paths
        outputs += [("--ort-format output", p) for p in ort_paths(dst)]
    for what, out in outputs:
        for name, path in inputs:
            if _same(out, path):
                raise SlimError(f"{what} {out} is {name}; refusing to overwrite it")
        if out.is_dir():
            raise SlimError(f"{what} {out} is a folder")
        if out.parent.exists() and not os.access(out.parent, os.W_OK):
            raise SlimError(f"{what} {out}: folder {out.parent} is not writable")
    if o["report_path"] and _same(dst, Path(o["report_path"])):
        raise SlimError(f"--report {o['report_path']} is the output model path")


DATA_CRITERIA = ("activation", "apoz", "hrank", "reconstruction")


def _prune_config(o):
    if o["prune_ratio"] is None and o["target_macs"] is None and o["target_latency"] is None:
        return None
    from onnxslim.passes.prune import PruneConfig
    fields = PruneConfig.__dataclass_fields__
    kw = dict(ratio=o["prune_ratio"], target_macs=o["target_macs"], target_latency=o["target_latency"], importance=o["importance"],
              min_channels=o["min_channels"], exclude=tuple(o["exclude"]))
    if o["round_to"] is not None:
        kw["round_to"] = o["round_to"]
    if o["allocation"]:
        kw["allocation"] = o["allocation"]
    for name in ("repair", "search_time"):
        if o.get(name) is not None and name in fields:
            kw[name] = o[name]
        elif o.get(name) is not None:
            raise SlimError(f"--{name.replace('_', '-')} is not available in this version")
    config = PruneConfig(**kw)
    config.check()
    return config


def _summary(report: dict) -> str:
    from .report_text import lowrank_table, prune_table
    from .validation_table import format_report_table
    passes = report.get("passes", {})
    from .summary import cleanup_lines
    lines = cleanup_lines(report, passes.get("cleanup") or {})
    prune = passes.get("prune")
    if prune:
        frozen = prune.get("frozen", [])
        lines.append(f"prune: {len(prune.get('pruned_groups', []))} of {prune.get('groups')} channel groups pruned "
                     f"({prune.get('importance')}, {prune.get('allocation')}); {len(frozen)} groups (partly) frozen")
        if prune.get("importance_choice"):
            from onnxslim.passes.prune.choose import describe
            lines.append("  " + describe(prune["importance_choice"]))
        latency = prune.get("latency_model")
        if latency:
            lines.append(f"  latency model: {latency['estimated_fraction']:.3f} of {latency['profiled_ms']} ms profiled "
                         f"({latency['mapped_fraction']:.0%} of the kernel time mapped to nodes)")
        fidelity = prune.get("fidelity") or {}
        if fidelity.get("after_repair"):
            b, a = fidelity.get("before_repair", {}), fidelity["after_repair"]
            lines.append(f"  repair on {fidelity.get('samples')} calibration samples: loss {b.get('loss')} -> {a.get('loss')}")
        for note in prune.get("notes") or []:
            lines.append(f"  note: {note}")
        for f in frozen[:6]:
            lines.append(f"  frozen {f['frozen_channels']}/{f['channels']} ch: {f['reasons'][0]}")
        if len(frozen) > 6:
            lines.append(f"  ... {len(frozen) - 6} more frozen groups (see --report or `onnxslim inspect`)")
    lowrank = passes.get("lowrank")
    if lowrank:
        lines.append(f"lowrank: {lowrank.get('factorized')} layers factorized ({'data-aware' if lowrank.get('data_aware') else 'weight'} SVD); "
                     f"their MACs x{lowrank.get('fraction')}; {len(lowrank.get('skipped', []))} layers left as they are (see --report)")
    if passes.get("quantize"):
        from onnxslim.passes.quantize import summary
        lines += summary(passes["quantize"])
    validation = report.get("validation")
    if validation and "skipped" in validation:
        lines.append(f"validation skipped: {validation['skipped']}")
    elif validation:
        used = ", ".join(f"{k}:{'x'.join(map(str, v['shape']))} ({v['source']})" for k, v in validation.get("input_shapes", {}).items())
        lines.append(f"validated on {validation.get('data')}" + (f"; input shapes {used}" if used else ""))
        lines.append(format_report_table(validation))
    lines += prune_table(prune or {}) + lowrank_table(lowrank or {})
    lines.append(f"total {report.get('seconds')} s")
    return "\n".join(lines)


@cli.command("inspect")
@click.argument("model", type=click.Path())
@click.option("--input-shape", multiple=True, help="Concrete shape for a dynamic input, NAME:D1,D2,...")
@click.option("--json", "as_json", is_flag=True, help="Print the full analysis as JSON.")
@click.option("--keep-bn", is_flag=True, help="Analyze with BatchNormalization kept (as --importance bn does).")
def inspect_cmd(model, input_shape, as_json, keep_bn):
    """List channel groups (prunable and frozen, with the reason), MACs and parameters per layer."""
    _guard(lambda: _inspect(model, input_shape, as_json, keep_bn))


def _inspect(model, input_shape, as_json, keep_bn):
    from . import check, graph, inputs
    from .inspect_view import analysis_data, render

    loaded = graph.load_model(model)
    check.check_tensor_io(loaded, "inspect")
    data, analysis = analysis_data(model, loaded, inputs.parse_input_shapes(input_shape), keep_bn)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=_json_default))
        return
    render(data, analysis)


def _guard(fn):
    from .warn import one_line_warnings
    try:
        with one_line_warnings():
            fn()
    except SlimError as err:
        click.echo(f"onnxslim: error: {err}", err=True)
        sys.exit(err.exit_code)
    except BrokenPipeError:
        _quiet_broken_pipe()
    except KeyboardInterrupt:
        click.echo("onnxslim: interrupted; nothing written", err=True)
        sys.exit(130)
    except Exception as err:  # a bug of ours: one line, the traceback only on request
        if os.environ.get("ONNXSLIM_DEBUG"):
            traceback.print_exc()
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        click.echo(f"onnxslim: internal error: {type(err).__name__}: {first} (set ONNXSLIM_DEBUG=1 for the traceback; nothing written)", err=True)
        sys.exit(3)


def _terminated(signum, frame):
    raise KeyboardInterrupt


def _quiet_broken_pipe():
    """The reader went away (`onnxslim inspect m.onnx | head -1`): it has what it wanted; exit 0 in silence.
    stdout is pointed at /dev/null so the interpreter's final flush does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(0)


def main():
    # numpy's BLAS threads fight onnxruntime's for the cores: measured 3-20x slower Gram solves and SVDs
    # on 2 busy cores. A user's own setting wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    # a SIGTERM (kill, a job scheduler's timeout) is an interrupt: the atomic save's clean-up runs
    signal.signal(signal.SIGTERM, _terminated)
    try:
        cli.main(prog_name="onnxslim", standalone_mode=False)
    except click.exceptions.UsageError as err:  # click's own usage errors: one line too
        if type(err).__name__ == "NoArgsIsHelpError" and err.ctx is not None:
            click.echo(err.ctx.get_help())
            sys.exit(0)
        click.echo(f"onnxslim: error: {err.format_message()}", err=True)
        sys.exit(2)
    except BrokenPipeError:
        _quiet_broken_pipe()
    except click.exceptions.Abort:
        click.echo("onnxslim: interrupted; nothing written", err=True)
        sys.exit(130)
    except click.exceptions.ClickException as err:
        click.echo(f"onnxslim: error: {err.format_message()}", err=True)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
