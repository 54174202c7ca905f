"""Model input specs and feeds: --input-shape parsing, random feeds, and .npy/.npz files checked against the model.

A *feed set* is a list of dicts {input name: array}, one dict per batch, ready for onnxruntime.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from . import budget
from .errors import SlimError, SlimWarning


def np_type(elem_type: int) -> np.dtype | None:
    """The numpy dtype of an ONNX element type (every tensor type: strings are object arrays, bfloat16,
    float8/float4 and int4 come from ml_dtypes through onnx), None for UNDEFINED or a non-tensor input."""
    if not elem_type:
        return None
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:  # a type this onnx version does not know
        return None


INT64_MAX = 2**63 - 1
# a scalar integer input with one of these names is an audio sample rate, not a token id
_SAMPLE_RATE_NAMES = ("sr", "sample_rate", "sampling_rate")


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: np.dtype
    shape: tuple | None  # ints, or str/None for dynamic dims; None when the rank is unknown


def model_inputs(model: onnx.ModelProto) -> list[InputSpec]:
    """The graph inputs that are not initializers (older exporters list weights as inputs too)."""
    inits = {i.name for i in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dtype = np_type(tt.elem_type) if vi.type.HasField("tensor_type") else None
        if dtype is None:
            kind = vi.type.WhichOneof("value") or "no"
            raise SlimError(f"input '{vi.name}' has {kind} type ({_type_name(tt.elem_type)}), which onnxslim cannot feed")
        # shape None: the model does not say the rank
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim) if tt.HasField("shape") else None
        specs.append(InputSpec(vi.name, dtype, dims))
    return specs


def _type_name(elem_type: int) -> str:
    try:
        return onnx.TensorProto.DataType.Name(elem_type)
    except ValueError:
        return str(elem_type)


def parse_input_shapes(items) -> dict[str, tuple[int, ...]]:
    """`name:1,3,224,224` (repeatable) -> {name: (1, 3, 224, 224)}."""
    shapes = {}
    for item in items or ():
        name, sep, dims = str(item).rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.split(","))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or any(d <= 0 for d in shape):
            raise SlimError(f"--input-shape '{item}': expected NAME:D1,D2,... with positive integers")
        if any(d > INT64_MAX for d in shape):
            raise SlimError(f"--input-shape '{item}': a dim beyond 2**63 - 1 cannot be an ONNX dim")
        shapes[name] = shape
    return shapes


def check_overrides(model: onnx.ModelProto, overrides: dict | None) -> None:
    """--input-shape names real inputs and fits their fixed dims (checked before any work)."""
    specs = {s.name: s for s in model_inputs(model)}
    unknown = set(overrides or {}) - set(specs)
    if unknown:
        raise SlimError(f"--input-shape names {sorted(unknown)}, but the model's inputs are {list(specs)}")
    for name, shape in (overrides or {}).items():
        _check_shape_fits(specs[name], shape, "--input-shape")


def symbolic_shapes(model: onnx.ModelProto, overrides: dict | None = None, batch: int = 1) -> dict[str, tuple | None]:
    """A shape per input where every dim is known or a symbol: ints from the model or `overrides`, a dynamic
    first dim = `batch`, and other dynamic dims as strings (the dim's name, or `input:axis` when unnamed).
    None when the model gives no rank. Nothing is asked of the user: these are enough for the weight-only steps.
    """
    overrides = dict(overrides or {})
    check_overrides(model, overrides)
    shapes = {}
    for spec in model_inputs(model):
        if spec.name in overrides:
            shapes[spec.name] = tuple(overrides[spec.name])
        elif spec.shape is None:
            shapes[spec.name] = None
        else:
            shapes[spec.name] = tuple(d if isinstance(d, int) and d > 0 else batch if axis == 0
                                      else (d if isinstance(d, str) and d else f"{spec.name}:{axis}")
                                      for axis, d in enumerate(spec.shape))
    return shapes


def resolve_shapes(model: onnx.ModelProto, overrides: dict | None = None, batch: int = 1) -> dict[str, tuple[int, ...]]:
    """A concrete shape per input: the override if given, else the model's dims with a dynamic first dim as batch.

    For the steps that run the model; the pipeline passes the shapes it chose (see `runshapes`) as overrides,
    so this raises only when no runnable shape was found for a dynamic dim.
    """
    shapes = symbolic_shapes(model, overrides, batch)
    for name, shape in shapes.items():
        if shape is None:
            raise SlimError(f"input '{name}' has no shape in the model; give it with --input-shape {name}:D1,D2,...")
        if not all(isinstance(d, int) and d > 0 for d in shape):
            axis = next(i for i, d in enumerate(shape) if not isinstance(d, int))
            hint = ",".join(str(x) if isinstance(x, int) else "N" for x in shape)
            raise SlimError(f"input '{name}' has a dynamic dim {axis} ({shape[axis]}) and no size it runs with was found; "
                            f"give it with --input-shape {name}:{hint}")
    return shapes


def _check_shape_fits(spec: InputSpec, shape, what: str) -> None:
    if spec.shape is None:
        return
    if len(shape) != len(spec.shape):
        raise SlimError(f"{what}: input '{spec.name}' has rank {len(spec.shape)} in the model, got shape {tuple(shape)}")
    for axis, (want, got) in enumerate(zip(spec.shape, shape)):
        if isinstance(want, int) and want > 0 and want != got:
            raise SlimError(f"{what}: input '{spec.name}' needs {want} on axis {axis}, got shape {tuple(shape)}")


def with_batch(model: onnx.ModelProto, shapes: dict, n: int) -> dict:
    """`shapes` with the batch dim set to `n`: a dynamic first dim, and every dim named like one (silero's
    state [2, batch, 128]); fixed dims stay as they are."""
    specs = {s.name: s for s in model_inputs(model)}
    batch_names = {s.shape[0] for s in specs.values() if s.shape and isinstance(s.shape[0], str) and s.shape[0]}
    out = {}
    for name, shape in shapes.items():
        dims = specs[name].shape if name in specs and specs[name].shape is not None else (None,) * len(shape)
        out[name] = tuple(n if (axis == 0 and not (isinstance(d, int) and d > 0)) or (isinstance(d, str) and d in batch_names)
                          else shape[axis] for axis, d in enumerate(dims))
    return out


def random_feeds(model: onnx.ModelProto, shapes: dict | None = None, *, count: int = 1, seed: int = 0) -> list[dict]:
    """`count` random batches: floats ~ N(0,1); integer inputs in [0, 100) (token ids, masks get 1), short
    1-D integer inputs in [0, 4) (they are often shapes, pads or repeats: large values would allocate huge
    tensors); strings are short words."""
    rng = np.random.default_rng(seed)
    resolved = resolve_shapes(model, shapes)
    check_feed_memory(model, resolved, count)
    specs = model_inputs(model)
    return [{spec.name: _random_array(spec, resolved[spec.name], rng) for spec in specs} for _ in range(count)]


def _random_array(spec: InputSpec, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    dtype, name = spec.dtype, spec.name.lower()
    integer = dtype.kind in "iu" or (dtype.kind == "V" and "int" in dtype.name)  # ml_dtypes int4/int2 are kind V
    if dtype == np.bool_:
        return np.ones(shape, dtype=np.bool_)
    if dtype == object:
        return rng.choice(np.array(["a", "bc", "def", "onnx"], dtype=object), size=shape)
    if dtype.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    if not integer:  # float16/32/64 and the ml_dtypes floats (bfloat16, float8, float4)
        return rng.standard_normal(shape).astype(np.float32).astype(dtype)
    if shape == () and name in _SAMPLE_RATE_NAMES:
        return np.array(16000, dtype=dtype)  # audio models branch on the rate (silero VAD)
    if "mask" in name:
        return np.ones(shape, dtype=dtype)
    if "type" in name or "segment" in name:
        return np.zeros(shape, dtype=dtype)
    # int2/int4 (numpy kind V) hold 0..1 at least; int8 holds 0..99
    high = 2 if dtype.kind == "V" else 4 if len(shape) == 1 and shape[0] <= 8 else 100
    return rng.integers(0, high, size=shape).astype(dtype)


def check_feed_memory(model: onnx.ModelProto, resolved: dict, count: int = 1) -> int:
    """Refuse before allocating: `count` batches of these shapes, plus the float64 draw of the largest,
    against the memory budget. Returns the bytes."""
    specs = {s.name: s for s in model_inputs(model)}
    sizes = [budget.array_bytes(shape, specs[name].dtype.itemsize) for name, shape in resolved.items() if name in specs]
    total = count * sum(sizes) + 2 * max(sizes, default=0)
    budget.require(total, f"the random inputs ({_describe(resolved)})")
    return total


def check_run_memory(model: onnx.ModelProto, resolved: dict, count: int = 1) -> None:
    """The feeds and the largest activation of a run at these shapes (onnx shape inference on a weightless
    copy) against the budget, and no convolution or pooling window on an empty axis (onnxslim.runcheck):
    refused before onnxruntime tries."""
    from .runcheck import check_run
    total = check_feed_memory(model, resolved, count)
    check_run(model, resolved, total, _describe(resolved))


def _describe(resolved: dict) -> str:
    return ", ".join(f"{n}:{','.join(map(str, s))}" for n, s in resolved.items())


def load_arrays(path: str | Path, model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Arrays from .npy (one-input models) or .npz (keys = input names), checked against the model's inputs.

    The first axis of every array is the sample axis (it is the model's batch axis).
    """
    path = Path(path)
    if not path.is_file():
        raise SlimError(f"{path}: no such data file")
    specs = model_inputs(model)
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
            if len(specs) != 1:
                raise SlimError(f"{path}: an .npy holds one array but the model has {len(specs)} inputs {[s.name for s in specs]}; use an .npz keyed by input name")
            arrays = {specs[0].name: arr}
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        else:
            raise SlimError(f"{path}: data must be .npy or .npz")
    except SlimError:
        raise
    except Exception as err:
        raise SlimError(f"{path}: cannot read arrays ({type(err).__name__}: {err})") from None
    missing = [s.name for s in specs if s.name not in arrays]
    if missing:
        raise SlimError(f"{path}: no array for model input(s) {missing}; it has {sorted(arrays)}")
    out, count = {}, None
    for spec in specs:
        arr = arrays[spec.name]
        if arr.ndim == 0:
            raise SlimError(f"{path}: '{spec.name}' is a scalar; arrays need a leading sample axis")
        if spec.shape is not None and arr.ndim != len(spec.shape):
            raise SlimError(f"{path}: '{spec.name}' has shape {arr.shape}, the model wants rank {len(spec.shape)} {spec.shape}")
        for axis, want in enumerate(spec.shape or ()):
            if axis and isinstance(want, int) and want > 0 and arr.shape[axis] != want:
                raise SlimError(f"{path}: '{spec.name}' has shape {arr.shape}, the model wants {want} on axis {axis} ({spec.shape})")
        if arr.dtype != spec.dtype:
            if np.issubdtype(arr.dtype, np.floating) != np.issubdtype(spec.dtype, np.floating):
                raise SlimError(f"{path}: '{spec.name}' is {arr.dtype}, the model wants {spec.dtype}")
            arr = arr.astype(spec.dtype)
        if count is not None and arr.shape[0] != count:
            raise SlimError(f"{path}: arrays have different sample counts ({count} and {arr.shape[0]})")
        count = arr.shape[0]
        out[spec.name] = arr
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            warnings.warn(SlimWarning(f"{path.name}: '{spec.name}' holds {int((~np.isfinite(arr)).sum())} NaN/Inf "
                                      "values; statistics computed from them are NaN"))
    if not count:
        raise SlimError(f"{path}: holds no samples")
    return out

