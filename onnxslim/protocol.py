"""The pass protocol, after onnx-ir's pass infrastructure (`onnx_ir.passes`: a pass is an object whose call
returns the model and whether it changed; the pass manager checks what a pass requires before running it).

A pass here is a `Pass` subclass, registered by one line in `onnxslim.passes.PASSES`:

- `config`: its dataclass, with `check()` raising SlimError for a bad value. A field that the command line
  sets carries `option(...)` metadata (flag, click arguments, how the value maps to the field): the CLI
  builds its options and the config from these, so a new option is one field.
- `requires(config)`: the graph properties the pass needs (`NORMALIZED`, `FLOAT32`); `provides(config)` what
  it makes true; `preserves`: what stays true after it changed the model. The pipeline runs the pass that
  provides a missing property first, or stops with that pass's message when none can.
- `run(model, config, ctx) -> PassResult(model, report, modified)`.
- `summary(report)`: the terminal's lines for its report; `details(report)`: its table after validation.

We do not subclass onnx_ir.passes.InPlacePass / FunctionalPass themselves: our passes work on
onnx.ModelProto (onnx-graphsurgeon, onnxruntime.quantization), not on onnx_ir.Model, and need the run
context (calibration data, shapes, progress) that onnx-ir's `call(model)` has no place for.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import onnx

from .context import Context, PassResult

# graph properties a pass may require or provide
NORMALIZED = "normalized"  # weights as initializers, static Reshape shapes where possible, unique node names
FOLDED = "folded"          # cleanup's last word: nothing left to fold or rewrite (a pass that edits layers
                           # keeps the model NORMALIZED, not FOLDED)
FLOAT32 = "float32"        # float32 weights and compute (not --fp16)
BATCHNORM = "batchnorm"    # BatchNormalization nodes as the model has them (not folded into Conv)
# what a model is before any pass ran
INITIAL = frozenset({FLOAT32, BATCHNORM})


@dataclass(frozen=True)
class Option:
    """One command-line option that sets one config field."""
    flags: tuple             # click's parameter declarations, e.g. ("--target-macs",) or ("--lowrank", "lowrank_energy")
    click: dict              # click.option keyword arguments (type, default, help, ...)
    # the click value (and all options, for a field that depends on another) -> the field's value; None
    # leaves the field at its dataclass default
    convert: Callable[[Any, dict], Any] | None = None
    enables: bool = False    # a value other than None/False turns the pass on

    @property
    def dest(self) -> str:
        """The keyword click passes this option's value as."""
        named = [f for f in self.flags if not f.startswith("-")]
        if named:
            return named[0]
        longest = max((f.split("/")[0] for f in self.flags), key=len)
        return longest.lstrip("-").replace("-", "_")


def option(*flags: str, convert=None, enables: bool = False, **click_kwargs) -> dict:
    """dataclasses.field metadata: `field(default=..., metadata=option("--flag", type=int, help=...))`."""
    return {"option": Option(tuple(flags), click_kwargs, convert, enables)}


def switch(*flags: str, help: str):
    """A float field that turns its pass on when given (a ratio or a target), None otherwise."""
    return dataclasses.field(default=None, metadata=option(*flags, type=float, enables=True, help=help))


def as_tuple(value, given):
    """An Option.convert for `multiple` options: click's tuple as the field's, None when unset."""
    return tuple(value) if value is not None else None


def is_given(value) -> bool:
    """A click value the user set: not None, not an unset flag, not an empty `multiple` (0 is a value)."""
    return value is not None and value is not False and value != ()


def config_options(config_class) -> list[tuple[str, Option]]:
    """(field name, Option) of every field of `config_class` the command line sets, in field order."""
    return [(f.name, f.metadata["option"]) for f in dataclasses.fields(config_class) if "option" in f.metadata]


class Pass:
    """Base class of the passes (see the module docstring)."""
    name: ClassVar[str]
    config: ClassVar[type]
    always: ClassVar[bool] = False      # runs on every run (cleanup), configured or not
    changes_layers: ClassVar[bool] = False  # changes layer widths or MACs: the report gets the layer table
    preserved: ClassVar[frozenset] = frozenset()  # properties that stay true when it changed the model
    required: ClassVar[frozenset] = frozenset()   # properties it needs, whatever its config

    def requires(self, config) -> set[str]:
        return set(self.required)

    def provides(self, config) -> set[str]:
        return set()

    def preserves(self, config) -> set[str]:
        return set(self.preserved)

    def lost(self, config, missing: set[str], later: list[str]) -> str:
        """The error when this pass took away `missing`, which the passes named `later` need."""
        return f"{self.name} leaves the graph without {', '.join(sorted(missing))}, which {', '.join(later)} need"

    def configure(self, config, later: set[str]):
        """This pass's config adjusted to what the later passes require (cleanup keeps BatchNorm for `bn`)."""
        return config

    def wants_calibration(self, config) -> bool:
        """Whether it uses real calibration data without `--calib` (the CLI warns about random data then)."""
        return False

    def weights_on_disk(self, config) -> bool:
        """Whether it takes a model whose large weights are references on disk (onnxslim.ondisk); the
        pipeline reads them into the model first for a pass that does not."""
        return self.always

    def run(self, model: onnx.ModelProto, config, ctx: Context) -> PassResult:
        raise NotImplementedError

    def summary(self, report: dict) -> list[str]:
        return []

    def details(self, report: dict) -> list[str]:
        return []

    def default_config(self):
        return self.config()

    def config_from_options(self, given: dict):
        """The config from the CLI's parsed options, or None when none of this pass's enabling options is set."""
        options = config_options(self.config)
        enabled = self.always or any(is_given(given.get(o.dest)) for _, o in options if o.enables)
        if not enabled:
            return None
        values = ((name, opt.convert(given.get(opt.dest), given) if opt.convert else given.get(opt.dest)) for name, opt in options)
        config = self.config(**{name: value for name, value in values if value is not None})
        config.check()
        return config
