"""The CLI's datasets: --calib and --data share one preprocessing (options, or MODEL.preprocess.json/.toml)."""
from __future__ import annotations

from pathlib import Path

import click

from .errors import SlimError


def datasets(src: Path, model, shapes, o, need_calib: bool):
    """(calibration Dataset or None, validation Dataset or None)."""
    from .calibration import load_calibration
    preprocess, preprocess_file = _preprocess(src, o)
    calibration = _calibration(model, shapes, o, preprocess, preprocess_file) if need_calib else None
    data = None
    if o["data"] and not o["no_validate"]:
        data = load_calibration(o["data"], model, size=o["val_size"] if o["val_size"] > 0 else None, preprocess=preprocess,
                                preprocess_file=preprocess_file, input_shapes=shapes, seed=o["seed"])
    return calibration, data


def _float_list(value, name):
    if value is None:
        return None
    try:
        return tuple(float(v) for v in str(value).split(","))
    except ValueError:
        raise SlimError(f"{name} '{value}': expected comma-separated numbers") from None


def _preprocess(src: Path, o):
    """(Preprocess or None, preprocess file or None) from the options and MODEL.preprocess.json/.toml."""
    from .calibration import Preprocess
    preprocess_file = o["preprocess_file"]
    if preprocess_file is None:
        for suffix in (".preprocess.json", ".preprocess.toml"):
            candidate = src.with_name(src.stem + suffix)
            if candidate.exists():
                preprocess_file = candidate
    preprocess = None
    image_opts = {k: o[k] for k in ("resize", "crop", "scale", "layout") if o[k] is not None}
    for k in ("mean", "std"):
        if o[k] is not None:
            image_opts[k] = _float_list(o[k], f"--{k}")
    if image_opts:
        base = Preprocess.from_file(preprocess_file) if preprocess_file else Preprocess()
        preprocess = base.__class__(**{**base.__dict__, **image_opts})
    return preprocess, preprocess_file


def _calibration(model, shapes, o, preprocess, preprocess_file):
    from .calibration import load_calibration
    if not o["calib"]:
        click.echo("onnxslim: warning: no --calib given; calibrating on random inputs (repair and int8 accuracy need real data)", err=True)
    return load_calibration(o["calib"], model, size=o["calib_size"], preprocess=preprocess,
                            preprocess_file=preprocess_file, input_shapes=shapes, seed=o["seed"])
