"""`--ort-format`: the mobile handoff. onnxruntime's own converter writes OUTPUT.ort (the flatbuffer format
minimal and mobile builds load) and OUTPUT.required_operators.config (the operator list a reduced
onnxruntime build is compiled with); the .ort is then loaded and run, and must give the .onnx's outputs."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx

from .errors import SlimError
from .graph import model_files
from .inputs import check_run_memory, random_feeds
from .runtime import run_once, session
from .units import first_line

CONFIG_SUFFIX = ".required_operators.config"
# the .ort is optimized ahead of time (level "all", no x86-only NCHWc layouts); the .onnx is optimized at
# load time: the same float ops in another order round differently, so equal means within this
TOLERANCE = 1e-4
QUANTIZED_TOLERANCE = 1e-2  # int8 models: a fused int8 kernel may round one step differently


def ort_paths(dst: Path) -> tuple[Path, Path]:
    """Where the .ort and its operator config go: beside OUTPUT, same stem."""
    return dst.with_suffix(".ort"), dst.with_suffix(CONFIG_SUFFIX)


def _convert(onnx_path: Path, folder: Path) -> tuple[Path, Path]:
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort
    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)  # it logs every config it writes at INFO
    quiet = io.StringIO()  # the converter prints its progress on stdout; keep it for the error message
    try:
        with contextlib.redirect_stdout(quiet):
            convert_onnx_models_to_ort(onnx_path, output_dir=folder, optimization_styles=[OptimizationStyle.Fixed])
    except Exception as err:
        raise SlimError(f"--ort-format: onnxruntime could not convert the model: {first_line(err)}; nothing written") from None
    ort = folder / (onnx_path.stem + ".ort")
    config = folder / (onnx_path.stem + CONFIG_SUFFIX)
    if not ort.exists() or not config.exists():
        raise SlimError(f"--ort-format: onnxruntime wrote no .ort file ({quiet.getvalue().strip()[-200:]}); nothing written")
    return ort, config


def compare(onnx_path: Path, ort_path: Path, feeds: list[dict]) -> float:
    """Largest output difference of the .ort against the .onnx, relative to the output's largest value."""
    a, b = session(onnx_path), session(ort_path)
    worst = 0.0
    for feed in feeds:
        for x, y in zip(run_once(a, feed), run_once(b, feed)):
            x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
            if x.shape != y.shape:
                return float("inf")
            if x.size:
                worst = max(worst, float(np.abs(x - y).max() / max(np.abs(x).max(), 1e-12)))
    return worst


def write_ort(dst: Path, input_shapes: dict | None = None, *, seed: int = 0) -> dict:
    """Convert the written model `dst`, check the .ort runs with the same outputs, then move the .ort and
    its config beside `dst` (renames: a failed check leaves neither behind)."""
    if len(model_files(dst)) > 1:
        raise SlimError("--ort-format: the ORT format holds models up to 2 GB with inline weights; this one has external data")
    model = onnx.load(str(dst), load_external_data=False)
    quantized = any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear") for n in model.graph.node)
    feeds = random_feeds(model, input_shapes, count=2, seed=seed)
    check_run_memory(model, {name: np.shape(value) for name, value in feeds[0].items()}, count=2)  # before onnxruntime
    folder = Path(tempfile.mkdtemp(prefix=".ort.", dir=dst.parent))
    try:
        ort, config = _convert(dst, folder)
        diff = compare(dst, ort, feeds)
        tolerance = QUANTIZED_TOLERANCE if quantized else TOLERANCE
        if not diff <= tolerance:
            raise SlimError(f"--ort-format: the .ort model's outputs differ from the .onnx's by {diff:.3g} (relative, > {tolerance:g}); nothing written")
        operators = [line for line in config.read_text().splitlines() if line.strip() and not line.startswith("#")]
        ort_dst, config_dst = ort_paths(dst)
        # the config names the model it was made from: the final file, not our temporary one
        config.write_text(config.read_text().replace(str(ort), ort_dst.name))
        os.replace(ort, ort_dst)
        os.replace(config, config_dst)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return {"ort": str(ort_dst), "required_operators": str(config_dst), "size_bytes": ort_dst.stat().st_size,
            "operator_lines": len(operators), "max_relative_difference": diff, "checked_on": f"{len(feeds)} random batches"}
