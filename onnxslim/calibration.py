"""Calibration datasets shared by pruning, repair, low-rank and quantization.

A Dataset streams feed dicts {input name: array} batch by batch: images are decoded per batch (never all
at once), arrays come from .npy/.npz, and random data stands in when nothing real is given (`real=False`,
so reports can say that accuracy claims need real data).
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx

from .errors import SlimError
from .inputs import load_arrays, model_inputs, random_feeds, resolve_shapes, with_batch

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DEFAULT_RANDOM_SIZE = 16
# decoded, preprocessed images are kept up to this many bytes: calibrated pruning streams the same images
# 20-30 times (statistics per sensitivity step, repair waves), and decoding + resizing was 7% of its time
IMAGE_CACHE_BYTES = 512 * 2**20


@dataclass
class Preprocess:
    """How an image becomes a model input: pixels * scale, centre crop after resizing, then (x - mean) / std.

    None fields are derived from the model's input shape by `resolved()`: crop = the input's H (and W),
    resize = crop * 256 / 224 (the usual ImageNet ratio), layout from where the channel axis sits.
    EfficientNet-Lite0: Preprocess(resize=256, crop=224, mean=(127,)*3, std=(128,)*3, scale=1.0).
    """
    resize: int | None = None           # shorter side after resizing (bilinear)
    crop: int | None = None             # centre crop, square
    mean: tuple = (0.0,)                # per channel (one value = every channel), after scale
    std: tuple = (1.0,)
    # multiplies the 0..255 pixels first; None: 1 when a mean or std is above 1 (they are on the 0..255
    # scale: `--mean 127 --std 128` with 1/255 gave near-constant inputs and a 0%-top-1 model), else 1/255
    scale: float | None = None
    layout: str | None = None           # "NCHW" | "NHWC"
    channels: str | None = None         # "RGB" | "BGR" | "L"

    def __post_init__(self):
        self.mean = _as_tuple(self.mean, "mean")
        self.std = _as_tuple(self.std, "std")
        if any(s == 0 for s in self.std):
            raise SlimError("preprocess: std must not contain 0")
        for name in ("resize", "crop"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0):
                raise SlimError(f"preprocess: {name} must be a positive integer, got {value!r}")
        if self.scale is not None and (not isinstance(self.scale, (int, float)) or isinstance(self.scale, bool)):
            raise SlimError(f"preprocess: scale must be a number, got {self.scale!r}")
        if self.layout is not None and self.layout not in ("NCHW", "NHWC"):
            raise SlimError(f"preprocess: layout must be NCHW or NHWC, got {self.layout!r}")
        if self.channels is not None and self.channels not in ("RGB", "BGR", "L"):
            raise SlimError(f"preprocess: channels must be RGB, BGR or L, got {self.channels!r}")

    @classmethod
    def from_file(cls, path: str | Path) -> "Preprocess":
        """Read a small JSON or TOML file whose keys are this dataclass's fields."""
        path = Path(path)
        try:
            text = path.read_bytes()
            data = tomllib.loads(text.decode()) if path.suffix == ".toml" else json.loads(text)
        except FileNotFoundError:
            raise SlimError(f"{path}: no such preprocess file") from None
        except (OSError, ValueError, tomllib.TOMLDecodeError) as err:
            raise SlimError(f"{path}: cannot parse preprocess file ({type(err).__name__}: {err})") from None
        if not isinstance(data, dict):
            raise SlimError(f"{path}: a preprocess file must hold a table of keys")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SlimError(f"{path}: unknown preprocess keys {unknown}; known keys are {sorted(known)}")
        try:
            return cls(**data)
        except SlimError as err:
            raise SlimError(f"{path}: {err}") from None

    def resolved(self, input_shape: tuple) -> "Preprocess":
        """Fill the None fields from a rank-4 model input shape (ints, or None for dynamic dims)."""
        if len(input_shape) != 4:
            raise SlimError(f"an image folder needs a rank-4 image input, the model's input has shape {tuple(input_shape)}")
        layout = self.layout or _guess_layout(input_shape)
        c, h, w = (input_shape[1], input_shape[2], input_shape[3]) if layout == "NCHW" else (input_shape[3], input_shape[1], input_shape[2])
        channels = self.channels or ("L" if c == 1 else "RGB")
        want_c = 1 if channels == "L" else 3
        if _known(c) and c != want_c:
            raise SlimError(f"preprocess channels {channels} give {want_c} channels, the model input wants {c} (layout {layout})")
        if _known(h) and _known(w) and h != w:
            raise SlimError(f"model input is {h}x{w}; onnxslim's image loader only centre-crops squares")
        crop = self.crop or (h if _known(h) else None)
        if crop is None:
            raise SlimError("the model's image size is dynamic; give crop in a preprocess file or --input-shape")
        if _known(h) and crop != h:
            raise SlimError(f"preprocess crop {crop} does not match the model input size {h}x{w}")
        resize = self.resize or int(round(crop * 256 / 224))
        if resize < crop:
            raise SlimError(f"preprocess resize {resize} is smaller than crop {crop}")
        for name in ("mean", "std"):
            if len(getattr(self, name)) not in (1, want_c):
                raise SlimError(f"preprocess {name} has {len(getattr(self, name))} values for {want_c} channels")
        return Preprocess(resize=resize, crop=crop, mean=self.mean, std=self.std, scale=self.effective_scale(), layout=layout, channels=channels)

    def effective_scale(self) -> float:
        if self.scale is not None:
            return float(self.scale)
        return 1.0 if max(abs(v) for v in self.mean + self.std) > 1 else 1.0 / 255.0

    def describe(self, given: "Preprocess | None" = None) -> dict:
        """The fields as used, and where the scale came from (for the report)."""
        source = given if given is not None else self
        why = "given" if source.scale is not None else (
            "0..255 scale: a mean or std is above 1" if source.effective_scale() == 1.0 else "default 1/255")
        return {"resize": self.resize, "crop": self.crop, "mean": list(self.mean), "std": list(self.std),
                "scale": self.effective_scale(), "scale_from": why, "layout": self.layout, "channels": self.channels}

    def apply(self, image) -> np.ndarray:
        """One PIL image -> float32 array (C, H, W) or (H, W, C); call on a resolved Preprocess."""
        from PIL import Image
        image = image.convert("L" if self.channels == "L" else "RGB")
        w, h = image.size
        ratio = self.resize / min(w, h)
        size = (max(self.crop, int(round(w * ratio))), max(self.crop, int(round(h * ratio))))
        image = image.resize(size, Image.BILINEAR)
        left, top = (size[0] - self.crop) // 2, (size[1] - self.crop) // 2
        image = image.crop((left, top, left + self.crop, top + self.crop))
        pixels = np.asarray(image, dtype=np.float32)
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if self.channels == "BGR":
            pixels = pixels[:, :, ::-1]
        x = (pixels * np.float32(self.effective_scale()) - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1) if self.layout == "NCHW" else x)


def _as_tuple(value, name) -> tuple:
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    if not values or any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in values):
        raise SlimError(f"preprocess: {name} must be a number or a list of numbers, got {value!r}")
    return tuple(float(v) for v in values)


def _known(d) -> bool:
    return isinstance(d, (int, np.integer)) and d > 0


def _guess_layout(shape) -> str:
    if shape[1] in (1, 3):
        return "NCHW"
    if shape[3] in (1, 3):
        return "NHWC"
    raise SlimError(f"cannot tell the channel axis of input shape {tuple(shape)}; set layout in a preprocess file")


class Dataset:
    """Calibration samples for a model; `batches(n)` streams {input name: array} dicts of at most n samples."""

    def __init__(self, names: list[str], size: int, *, real: bool, source: str, fixed_batch: int | None = None):
        self.names = list(names)
        self.real = real
        self.source = source              # a short description for reports
        self._size = size
        self._fixed_batch = fixed_batch   # the model's batch dim when it is a fixed int

    def __len__(self) -> int:
        return self._size

    def batches(self, batch_size: int = 8) -> Iterator[dict[str, np.ndarray]]:
        raise NotImplementedError

    def _effective_batch(self, batch_size: int) -> int:
        if batch_size <= 0:
            raise SlimError(f"batch size must be positive, got {batch_size}")
        return self._fixed_batch or batch_size

    def _spans(self, batch_size: int):
        step = self._effective_batch(batch_size)
        stop = self._size - (self._size % step if self._fixed_batch else 0)  # a fixed batch dim cannot take a partial batch
        for start in range(0, stop, step):
            yield start, min(start + step, stop)

    def describe(self) -> dict:
        return {"source": self.source, "samples": len(self), "real": self.real}

    def shape_hints(self) -> dict:
        """{input: (source, shape at batch 1)} this data fixes, for the run shapes (see onnxslim.runshapes)."""
        return {}

    def bind(self, shapes: dict | None) -> None:
        """Take the run shapes chosen for the model (random data and images of a dynamic size need them)."""


class ImageDataset(Dataset):
    def __init__(self, files: list[Path], name: str, preprocess: Preprocess | None, dtype, fixed_batch=None, *,
                 given: Preprocess | None = None, folder: Path | None = None, classes: list[int] | None = None,
                 pending=None):
        folder = folder or (files[0].parent if files else None)
        super().__init__([name], len(files), real=True, source=f"{len(files)} images from {folder}" if files else "no images", fixed_batch=fixed_batch)
        self.files = files
        self.preprocess = preprocess  # None until bind() when the model's image size is dynamic and no crop given
        self.pending = pending        # (unresolved Preprocess, model input shape) for that case
        self.given = given            # the preprocessing as the user gave it (None fields = derived)
        self.dtype = dtype
        self.folder = folder
        self.classes = classes        # class index per file, from one sub-folder per class
        self._cache: dict = {}        # path -> prepared array, shared with take()'s datasets

    def take(self, start: int, stop: int | None = None) -> "ImageDataset":
        """The samples start..stop as a dataset of their own (e.g. calibration samples held out from fitting)."""
        part = ImageDataset(self.files[start:stop], self.names[0], self.preprocess, self.dtype, self._fixed_batch,
                            given=self.given, folder=self.folder, classes=self.classes[start:stop] if self.classes else None,
                            pending=self.pending)
        part._cache = self._cache
        return part

    def describe(self) -> dict:
        resolved = self.preprocess or self.pending[0]  # unbound (dynamic size): the crop is still open
        return {**super().describe(), "preprocess": resolved.describe(self.given)}

    def shape_hints(self) -> dict:
        p = self.preprocess
        if p is None:
            return {}
        c = {"L": 1}.get(p.channels, 3)
        shape = (1, c, p.crop, p.crop) if p.layout == "NCHW" else (1, p.crop, p.crop, c)
        return {self.names[0]: ("preprocess", shape)}

    def bind(self, shapes: dict | None) -> None:
        if self.preprocess is None and shapes and self.names[0] in shapes:
            base, model_shape = self.pending
            shape = shapes[self.names[0]]
            self.preprocess = base.resolved(tuple(m if isinstance(m, int) and m > 0 else s for m, s in zip(model_shape, shape)))

    def batches(self, batch_size: int = 8):
        if self.preprocess is None:
            raise SlimError("the model's image size is dynamic and no size it runs with was found; give crop in a preprocess file or --input-shape")
        for start, stop in self._spans(batch_size):
            yield {self.names[0]: np.stack([self._image(path) for path in self.files[start:stop]])}

    def _image(self, path: Path) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError
        if path in self._cache:
            return self._cache[path]
        try:
            with Image.open(path) as image:
                array = self.preprocess.apply(image).astype(self.dtype, copy=False)
        except (OSError, UnidentifiedImageError, ValueError) as err:
            raise SlimError(f"{path}: cannot decode image ({type(err).__name__}: {err})") from None
        if (len(self._cache) + 1) * array.nbytes <= IMAGE_CACHE_BYTES:
            array.setflags(write=False)  # shared between batches: nobody may write into it
            self._cache[path] = array
        return array


class ArrayDataset(Dataset):
    def __init__(self, arrays: dict[str, np.ndarray], source: str, size: int | None = None, fixed_batch=None):
        n = next(iter(arrays.values())).shape[0]
        super().__init__(list(arrays), min(n, size) if size else n, real=True, source=source, fixed_batch=fixed_batch)
        self.arrays = arrays

    def take(self, start: int, stop: int | None = None) -> "ArrayDataset":
        stop = len(self) if stop is None else min(stop, len(self))
        part = ArrayDataset({k: v[start:stop] for k, v in self.arrays.items()}, self.source, None, self._fixed_batch)
        part.path = None if start else getattr(self, "path", None)  # labels in the file start at sample 0
        return part

    def shape_hints(self) -> dict:
        return {k: ("--calib", (self._fixed_batch or 1,) + v.shape[1:]) for k, v in self.arrays.items()}

    def batches(self, batch_size: int = 8):
        for start, stop in self._spans(batch_size):
            yield {k: np.ascontiguousarray(v[start:stop]) for k, v in self.arrays.items()}


class RandomDataset(Dataset):
    def __init__(self, model: onnx.ModelProto, size: int, input_shapes: dict | None, seed: int, fixed_batch=None):
        names = [s.name for s in model_inputs(model)]
        super().__init__(names, size, real=False, source=f"{size} random samples (seed {seed})", fixed_batch=fixed_batch)
        self.model = model
        self.input_shapes = dict(input_shapes or {})
        self.seed = seed

    def bind(self, shapes: dict | None) -> None:
        self.input_shapes = {**(shapes or {}), **self.input_shapes}  # the user's --input-shape wins

    def batches(self, batch_size: int = 8):
        for i, (start, stop) in enumerate(self._spans(batch_size)):
            # raises with a hint when a dynamic dim has no size (none given, none found)
            resolved = resolve_shapes(self.model, self.input_shapes)
            shapes = with_batch(self.model, resolved, stop - start)
            yield random_feeds(self.model, shapes, count=1, seed=self.seed + i)[0]


def load_calibration(spec: str | Path | None, model: onnx.ModelProto, *, size: int | None = None,
                     preprocess: Preprocess | None = None, preprocess_file: str | Path | None = None,
                     input_shapes: dict | None = None, seed: int = 0) -> Dataset:
    """A Dataset from an image folder, an .npy/.npz file, or None (random data, `real=False`).

    `size` keeps the first N samples (images in sorted file name order), so runs are reproducible.
    `preprocess_file` (JSON/TOML) is read when `preprocess` is not given; the CLI passes
    `<model stem>.preprocess.json|toml` when it sits next to the model.
    """
    if size is not None and size <= 0:
        raise SlimError(f"calibration size must be positive, got {size}")
    specs = model_inputs(model)
    if not specs:
        raise SlimError("the model has no inputs to calibrate")
    first = specs[0].shape[0] if specs[0].shape else None
    fixed_batch = first if _known(first) and first > 0 else None
    if spec is None:
        return RandomDataset(model, size or DEFAULT_RANDOM_SIZE, input_shapes, seed, fixed_batch)
    path = Path(spec)
    if path.is_dir():
        return _image_folder(path, model, specs, size, preprocess, preprocess_file, input_shapes, fixed_batch)
    if path.suffix in (".npy", ".npz"):
        arrays = load_arrays(path, model)
        dataset = ArrayDataset(arrays, f"{path.name}", size, fixed_batch)
        dataset.path = path  # labels.py reads an .npz's 'labels' array from it
        return dataset
    if not path.exists():
        raise SlimError(f"{path}: no such calibration folder or file")
    raise SlimError(f"{path}: calibration data must be a folder of images or an .npy/.npz file")


def _image_folder(path, model, specs, size, preprocess, preprocess_file, input_shapes, fixed_batch) -> ImageDataset:
    from PIL import Image, UnidentifiedImageError
    if len(specs) != 1:
        raise SlimError(f"{path}: an image folder can only feed a model with one input; this one has {[s.name for s in specs]} (use an .npz)")
    spec = specs[0]
    if not np.issubdtype(spec.dtype, np.floating):
        raise SlimError(f"{path}: the model input '{spec.name}' is {spec.dtype}, images need a float input")
    files, classes = _image_files(path)
    files = files[:size] if size else files
    classes = classes[:len(files)] if classes else None
    for file in files:  # headers only: cheap, and a broken file fails before minutes of calibration
        try:
            with Image.open(file) as image:
                image.size
        except (OSError, UnidentifiedImageError) as err:
            raise SlimError(f"{file}: not a readable image ({type(err).__name__})") from None
    shape = tuple((input_shapes or {}).get(spec.name, spec.shape))
    if preprocess is None:
        preprocess = Preprocess.from_file(preprocess_file) if preprocess_file else Preprocess()
    if preprocess.crop is None and len(shape) == 4 and not all(_known(d) for d in shape[1:]):
        # dynamic image size and no crop: resolved in bind() at the size the model is found to run with
        return ImageDataset(files, spec.name, None, spec.dtype, fixed_batch, given=preprocess, folder=path,
                            classes=classes, pending=(preprocess, shape))
    return ImageDataset(files, spec.name, preprocess.resolved(shape), spec.dtype, fixed_batch, given=preprocess,
                        folder=path, classes=classes)


def _image_files(path: Path) -> tuple[list[Path], list[int] | None]:
    """Images in the folder (sorted by name), else in one sub-folder per class: (files, class per file).
    Sub-folders named by integers are those class indices; otherwise their sorted position."""
    def images(folder):
        return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    files = images(path)
    if files:
        return files, None
    subs = sorted((d for d in path.iterdir() if d.is_dir() and images(d)), key=lambda d: d.name)
    if not subs:
        raise SlimError(f"{path}: no .jpg/.jpeg/.png images in this folder nor in sub-folders (one per class)")
    numeric = all(d.name.isdigit() for d in subs)
    ordered = sorted(subs, key=lambda d: int(d.name)) if numeric else subs
    files, classes = [], []
    for position, d in enumerate(ordered):
        found = images(d)
        files += found
        classes += [int(d.name) if numeric else position] * len(found)
    return files, classes
