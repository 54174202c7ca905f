"""`onnxslim MODEL [OUTPUT] [options]` and `onnxslim inspect MODEL`: a thin layer over the API.

Bad input prints one line and exits 2; a result that fails --min-cosine exits 1; nothing is written then.
"""
from __future__ import annotations

import os

# numpy's BLAS threads fight onnxruntime's for the cores: measured 3-20x slower Gram solves and SVDs on 2
# busy cores (and 5x the CPU of a repair run). OpenBLAS reads this once, when numpy loads it, so it is set
# before anything below imports numpy; a user's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import json
import shlex
import signal
import sys
import traceback
from pathlib import Path

import click

from . import check, graph, inputs
from .cli_data import datasets, preprocess_hint
from .errors import SlimError
from .inspect_view import analysis_data, render
from .options import check_options
from .ort_format import ort_paths, write_ort
from .passes import PASSES
from .pipeline import optimize
from .progress import progress, silent
from .protocol import Option, config_options, is_given
from .report_files import json_default, write_report
from .report_text import one_line
from .units import size
from .validation_table import format_report_table
from .warn import one_line_warnings

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


# the options of the run itself; each pass's options come from its config (onnxslim.protocol)
CORE_OPTIONS = (
    (("-o", "--output", "output_opt"), dict(type=click.Path(), help="Output model (default: MODEL.slim.onnx beside it).")),
    # calibration
    (("--calib",), dict(type=click.Path(), help="Calibration data: image folder (or one sub-folder per class), .npy or .npz.")),
    (("--calib-size",), dict(type=int, show_default="all", help="Use the first N calibration samples (file name order).")),
    (("--resize",), dict(type=int, show_default="crop x 256/224", help="Images: resize the shorter side to this.")),
    (("--crop",), dict(type=int, show_default="the model's input size", help="Images: centre crop to this size.")),
    (("--mean",), dict(show_default="0", help="Images: per-channel mean, e.g. 127 or 123.7,116.3,103.5 (after --scale).")),
    (("--std",), dict(show_default="1", help="Images: per-channel std, e.g. 128 or 58.4,57.1,57.4 (after --scale).")),
    (("--scale",), dict(type=float, show_default="1 if a --mean or --std is above 1 (0..255 values), else 1/255",
                        help="Images: multiply 0..255 pixels by this first.")),
    (("--layout",), dict(type=click.Choice(["NCHW", "NHWC"]), show_default="from the model's input shape", help="Images: tensor layout.")),
    (("--no-data-check",), dict(is_flag=True, help="Skip the checks of --calib/--data (near-constant samples, values the first "
                                                    "layer never saw, one predicted class).")),
    (("--preprocess", "preprocess_file"), dict(type=click.Path(), help="JSON/TOML preprocessing file (default: MODEL.preprocess.json/.toml if present).")),
    # validation and output
    (("--data",), dict(type=click.Path(), show_default="random inputs (a structure check, not accuracy)",
                       help="Validation inputs: image folder (or one sub-folder per class; the --calib preprocessing), .npy or .npz.")),
    (("--labels",), dict(type=click.Path(), help="Classes of the --data samples for top-1/top-5 accuracy: lines `file<TAB>class index` "
                         "for an image folder, one class per line (or .npy) for arrays. Also read from class sub-folders or an .npz 'labels' array.")),
    (("--val-size",), dict(type=int, default=64, show_default=True, help="Validate on the first N --data samples.")),
    (("--input-shape",), dict(multiple=True, help="Concrete shape for a dynamic input, NAME:D1,D2,... (repeatable).")),
    (("--no-validate",), dict(is_flag=True, help="Skip the comparison with the original.")),
    (("--no-latency",), dict(is_flag=True, help="Validate outputs but do not time the models.")),
    (("--threads",), dict(type=int, default=None, help="onnxruntime threads for the timings (validation, --target-latency's profile). "
                                                       "Default: onnxruntime's for validation, 1 for the profile.")),
    (("--min-cosine",), dict(type=float, help="Fail (exit 1, write nothing) if an output's cosine similarity is below this.")),
    (("--external-data",), dict(is_flag=True, help="Save the weights in OUTPUT.data beside the model (always done over 2 GB).")),
    (("--report", "report_path"), dict(type=click.Path(), help="Write the full report: FILE.html a self-contained page with charts, else JSON.")),
    (("--ort-format",), dict(is_flag=True, help="Also write OUTPUT.ort (onnxruntime's mobile format) and "
                                                "OUTPUT.required_operators.config, checked by running it.")),
    (("--seed",), dict(type=int, default=0, show_default=True)),
    (("-q", "--quiet"), dict(is_flag=True, help="No table, no progress bars.")),
)


def pass_options(passes) -> list:
    """The passes' options, each once (an option two passes share, like --exclude, keeps the first's help)."""
    options = {}
    for p in passes:
        for _, opt in config_options(p.config):
            options.setdefault(opt.dest, opt)
    return list(options.values())


def add_optimize_command(group: click.Group, passes) -> None:
    """`optimize MODEL [OUTPUT]` with the run's options and every pass's, on `group`."""
    def optimize_cmd(model, output, output_opt, **opts):
        """Optimize MODEL and write the result to OUTPUT (or -o)."""
        _guard(lambda: _optimize(model, output, output_opt, opts, passes))

    params = [*CORE_OPTIONS[:1], *((o.flags, o.click) for o in pass_options(passes)), *CORE_OPTIONS[1:]]
    for flags, kw in reversed(params):
        optimize_cmd = click.option(*flags, **kw)(optimize_cmd)
    optimize_cmd = click.argument("output", required=False, type=click.Path())(optimize_cmd)
    optimize_cmd = click.argument("model", type=click.Path(dir_okay=True))(optimize_cmd)
    group.command("optimize")(optimize_cmd)


def float_options(passes) -> tuple:
    """Names of the float options (NaN passes every range check: options.check_options refuses it)."""
    core = [flags for flags, kw in CORE_OPTIONS if kw.get("type") is float]
    return tuple(Option(f, {}).dest for f in core) + tuple(o.dest for o in pass_options(passes) if o.click.get("type") is float)


def _optimize(model, output, output_opt, o, passes):
    if output and output_opt and output != output_opt:
        raise SlimError(f"two output paths given ({output} and {output_opt})")
    src = Path(model)
    dst = Path(output or output_opt or src.with_name(src.stem + ".slim.onnx"))
    _check_paths(src, dst, o)
    check_options(o, float_options(passes))
    if o["min_cosine"] is not None and o["no_validate"]:
        raise SlimError("--min-cosine needs validation; drop --no-validate")
    original = graph.load_model(src, lazy=True)  # weights stay on disk (onnxslim.ondisk)
    shapes = inputs.parse_input_shapes(o["input_shape"])
    configs = {p.name: p.config_from_options(o) for p in passes}
    # an option that turns a pass on (or changes the lossless one, --fp16) was given
    requested = any(is_given(o.get(opt.dest)) for p in passes for _, opt in config_options(p.config) if opt.enables)
    if not requested and not o["quiet"]:
        flags = ", ".join(opt.flags[0] for p in passes if not p.always for _, opt in config_options(p.config) if opt.enables)
        only = "lossless cleanup" + ("" if o["no_validate"] else " and validation")
        click.echo(f"onnxslim: no pass requested ({flags}): {only} only", err=True)
    # a pass that calibrates asks for data even without --calib (the random-data warning); dynamic int8 and
    # the weight-only modes do not
    need_calib = bool(o["calib"]) or any(c is not None and p.wants_calibration(c) for p, c in zip(passes, configs.values()))
    calibration, data = datasets(src, original, shapes, o, need_calib)
    result = optimize(original, configs=configs, passes=passes, calibration=calibration,
                      data=data, input_shapes=shapes, validate=not o["no_validate"], shape_hints=preprocess_hint(src, original, o),
                      latency=not o["no_latency"], min_cosine=o["min_cosine"],
                      progress=silent if o["quiet"] else progress, seed=o["seed"], threads=o["threads"],
                      val_size=o["val_size"], labels=o["labels"], check_data=not o["no_data_check"])
    result.report.update(model=str(src), output=str(dst), command=shlex.join(["onnxslim", *sys.argv[1:]]))
    graph.save_model(result.model, dst, input_path=src, external_data=o["external_data"])
    _write_extras(result, dst, shapes, o)
    if not o["quiet"]:
        click.echo(terminal_summary(result.report, passes))
        click.echo(f"wrote {dst}")
        ort = result.report.get("ort_format")
        if ort:
            diff = ort["max_relative_difference"]
            same = "the .onnx's outputs exactly" if diff == 0 else f"the .onnx's outputs within {diff:.1g} (relative)"
            click.echo(f"wrote {ort['ort']} and {Path(ort['required_operators']).name} (loaded and run in onnxruntime: {same})")
        click.echo(one_line(result.report))


def _write_extras(result, dst: Path, shapes, o) -> None:
    """--ort-format and --report, after the model: all or nothing (a failure removes the model)."""
    if o["ort_format"]:
        try:
            result.report["ort_format"] = write_ort(dst, shapes, seed=o["seed"])
        except SlimError:
            dst.unlink(missing_ok=True)
            raise
    if o["report_path"]:
        try:
            write_report(Path(o["report_path"]), result.report)
        except OSError as err:
            dst.unlink(missing_ok=True)
            raise SlimError(f"cannot write --report {o['report_path']}: {err.strerror or err}; nothing written") from None


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _check_paths(src: Path, dst: Path, o) -> None:
    """Outputs never replace an input or each other, and can be written: checked before any work."""
    inputs = [("the input model", src)] + [("the input model's external data file", f) for f in graph.model_files(src)[1:]]
    inputs += [(f"the --{k} file", Path(o[k])) for k in ("data", "calib", "labels") if o.get(k)]
    outputs = [("output", dst)] + ([("--report", Path(o["report_path"]))] if o["report_path"] else [])
    if o.get("ort_format"):
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


def terminal_summary(report: dict, passes=PASSES) -> str:
    """The table the CLI prints: the model before/after, each pass's lines, validation, the passes' tables."""
    ran = report.get("passes", {})
    stats = report.get("model_stats")
    lines = []
    if stats:
        (n0, n1), (i0, i1), (b0, b1) = stats["nodes"], stats["initializers"], stats["bytes"]
        lines.append(f"model: nodes {n0} -> {n1}, initializers {i0} -> {i1}, size {size(b0)} -> {size(b1)}")
    lines += [line for p in passes if p.name in ran for line in p.summary(ran[p.name] or {})]
    validation = report.get("validation")
    if validation and "skipped" in validation:
        lines.append(f"validation skipped: {validation['skipped']}")
    elif validation:
        used = ", ".join(f"{k}:{'x'.join(map(str, v['shape']))} ({v['source']})" for k, v in validation.get("input_shapes", {}).items())
        lines.append(f"validated on {validation.get('data')}" + (f"; input shapes {used}" if used else ""))
        lines.append(format_report_table(validation))
    lines += [line for p in passes if p.name in ran for line in p.details(ran[p.name] or {})]
    lines.append(f"total {report.get('seconds')} s")
    return "\n".join(lines)


add_optimize_command(cli, PASSES)


@cli.command("inspect")
@click.argument("model", type=click.Path())
@click.option("--input-shape", multiple=True, help="Concrete shape for a dynamic input, NAME:D1,D2,...")
@click.option("--json", "as_json", is_flag=True, help="Print the full analysis as JSON.")
@click.option("--keep-bn", is_flag=True, help="Analyze with BatchNormalization kept (as --importance bn does).")
def inspect_cmd(model, input_shape, as_json, keep_bn):
    """List channel groups (prunable and frozen, with the reason), MACs and parameters per layer."""
    _guard(lambda: _inspect(model, input_shape, as_json, keep_bn))


def _inspect(model, input_shape, as_json, keep_bn):
    loaded = graph.load_model(model)
    check.check_tensor_io(loaded, "inspect")
    data, analysis = analysis_data(model, loaded, inputs.parse_input_shapes(input_shape), keep_bn)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=json_default))
        return
    render(data, analysis)


def _guard(fn):
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
    # a SIGTERM (kill, a job scheduler's timeout) is an interrupt: the atomic save's clean-up runs
    signal.signal(signal.SIGTERM, _terminated)
    try:
        cli.main(prog_name="onnxslim", standalone_mode=False)
    except click.exceptions.ClickException as err:  # click's own errors (usage: exit 2): one line too
        if type(err).__name__ == "NoArgsIsHelpError" and err.ctx is not None:
            click.echo(err.ctx.get_help())
            sys.exit(0)
        click.echo(f"onnxslim: error: {err.format_message()}", err=True)
        sys.exit(err.exit_code)
    except BrokenPipeError:
        _quiet_broken_pipe()
    except click.exceptions.Abort:
        click.echo("onnxslim: interrupted; nothing written", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
