"""The CLI's datasets: --calib and --data share one preprocessing (options, or MODEL.preprocess.json/.toml)."""
from __future__ import annotations

from pathlib import Path

import click

from .calibration import Preprocess, load_calibration
from .inputs import model_inputs
from .options import float_list


def datasets(src: Path, model, shapes, o, need_calib: bool):
    """(calibration Dataset or None, validation Dataset or None)."""
    preprocess, path = _preprocess(src, o)
    calibration = data = None
    if need_calib and not o["calib"]:
        click.echo("onnxslim: warning: no --calib given; calibrating on random inputs (repair and int8 accuracy need real data)", err=True)
    if need_calib:
        calibration = load_calibration(o["calib"], model, size=o["calib_size"], preprocess=preprocess,
                                       preprocess_file=path, input_shapes=shapes, seed=o["seed"])
    if o["data"] and not o["no_validate"]:
        data = load_calibration(o["data"], model, size=o["val_size"] if o["val_size"] > 0 else None, preprocess=preprocess,
                                preprocess_file=path, input_shapes=shapes, seed=o["seed"])
    return calibration, data


def preprocess_file(src: Path, o):
    """--preprocess-file, else MODEL.preprocess.json/.toml next to the model, else None."""
    if o["preprocess_file"] is not None:
        return o["preprocess_file"]
    for suffix in (".preprocess.json", ".preprocess.toml"):
        candidate = src.with_name(src.stem + suffix)
        if candidate.exists():
            return candidate
    return None


def preprocess_hint(src: Path, model, o) -> dict:
    """The image size a preprocess file (or --crop) gives a one-input image model, for the run shapes."""
    specs, path = model_inputs(model), preprocess_file(src, o)
    crop = o["crop"] or (Preprocess.from_file(path).crop if path else None)
    if not crop or len(specs) != 1 or specs[0].shape is None or len(specs[0].shape) != 4:
        return {}
    shape = specs[0].shape
    if shape[-1] in (1, 3) and shape[1] not in (1, 3):  # NHWC
        return {specs[0].name: ("preprocess", (1, crop, crop, shape[-1]))}
    return {specs[0].name: ("preprocess", (1, shape[1] if shape[1] in (1, 3) else 3, crop, crop))}


def _preprocess(src: Path, o):
    """(Preprocess or None, preprocess file or None) from the options and MODEL.preprocess.json/.toml."""
    path = preprocess_file(src, o)
    preprocess = None
    image_opts = {k: o[k] for k in ("resize", "crop", "scale", "layout") if o[k] is not None}
    image_opts.update({k: float_list(o[k], f"--{k}") for k in ("mean", "std") if o[k] is not None})
    if image_opts:
        base = Preprocess.from_file(path) if path else Preprocess()
        preprocess = base.__class__(**{**base.__dict__, **image_opts})
    return preprocess, path

