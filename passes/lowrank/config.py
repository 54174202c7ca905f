"""The low-rank pass's config: its fields, their checks and the command-line options that set them."""
from __future__ import annotations

from dataclasses import dataclass, field

import click

from onnxslim.errors import SlimError
from onnxslim.protocol import as_tuple, option, switch

from .greedy import LOSSES

ALL_OPS = ("matmul", "gemm", "conv")


def _kinds(value, given):
    return tuple(s.strip() for s in value.split(",") if s.strip()) if value is not None else None


@dataclass
class LowRankConfig:
    # keep this fraction of each layer's spectral energy
    energy: float | None = switch("--lowrank", "lowrank_energy", help="Low-rank splits keeping this fraction of spectral energy.")
    # or: factorized kinds' MACs at most this fraction of the original
    target_macs: float | None = switch("--lowrank-target-macs", help="Low-rank: factorized layers' MACs at most this fraction.")
    ops: tuple = field(default=ALL_OPS, metadata=option(  # subset of {"matmul", "gemm", "conv"}
        "--lowrank-ops", default="matmul,gemm,conv", show_default=True, convert=_kinds, help="Layer kinds to factorize."))
    exclude: tuple = field(default=(), metadata=option(  # node names left alone
        "--exclude", multiple=True, convert=as_tuple, help="Node name to leave untouched (repeatable)."))
    conv_svd: str = field(default="auto", metadata=option(  # "channel" | "spatial" | "auto"
        "--conv-svd", type=click.Choice(["channel", "spatial", "auto"]), default="auto", show_default=True))
    round_to: int = field(default=8, metadata=option(  # ranks are multiples of this
        "--round-to", type=int, default=None, help="Kept widths are multiples of N (default 16), low-rank ranks too (default 8)."))
    data_aware: bool | None = None       # None: True when ctx.calibration is real data
    sequential: bool = True              # data-aware: fit each layer on the already-compressed model's inputs
    attention_metric: bool = True        # data-aware: fit Q/K projections for the attention logits (attention.py)
    correct_unsplit: bool = False        # sequential: also refit the layers left whole (full-rank output-space
                                         # correction towards the original's output, same ridge)
    ridge: float = 1.0                   # sequential refit: shrinkage towards "no correction", x mean eigenvalue
                                         # (1.0 measured better than 1e-3 on MiniLM: less over-fitting)
    max_error: float | None = None       # never offer a rank whose relative output error exceeds this
    token_mask: str | None = "auto"      # input marking padding positions to ignore in statistics
    batch_size: int = 16
    sensitivity: bool | None = None      # weigh layer errors by their measured effect on the model outputs
                                         # (None: on for data-aware --lowrank-target-macs)
    sensitivity_batches: int = 2         # calibration batches used per layer for that measurement
    sensitivity_outputs: tuple = ()      # graph outputs that measurement compares (empty: all of them)
    probe_error: float = 0.1             # layer error at which sensitivity is measured
    allocation: str = "auto"             # --lowrank-target-macs: "greedy" (step by step, measured on the compressed
                                         # model: greedy.py), "lagrangian" (one-shot: layer errors x sensitivity).
                                         # auto = lagrangian: on MiniLM greedy measured the same cosine (0.8977 vs
                                         # 0.8975 at 70%) for ~10x the network evaluations
    allocation_loss: str = "mse"         # greedy: "mse" | "cosine" | "similarity" on sensitivity_outputs
    allocation_step: float = 0.005       # greedy: a step cuts at least this fraction of the layers' MACs
    allocation_candidates: int = 8       # greedy: tries run through the network per step (besides first tries)
    allocation_batches: int = 4          # greedy: calibration batches the loss is measured on
    allocation_refine: int = 0           # greedy: re-linearized Lagrangian refinements tried after the steps (on
                                         # MiniLM at 70% the one tried measured worse than the greedy plan)
    ranks: dict = field(default_factory=dict)          # explicit {node name: rank}, overriding the selection
    layer_weights: dict = field(default_factory=dict)  # {node name: weight of its error in the allocation}

    def check(self) -> None:
        if (self.energy is None) == (self.target_macs is None) and not self.ranks:
            raise SlimError("low-rank: give exactly one of --lowrank ENERGY or --lowrank-target-macs F")
        if self.energy is not None and not 0.0 < self.energy <= 1.0:
            raise SlimError(f"--lowrank: energy must be in (0, 1], got {self.energy}")
        if self.target_macs is not None and not 0.0 < self.target_macs <= 1.0:
            raise SlimError(f"--lowrank-target-macs must be in (0, 1], got {self.target_macs}")
        bad = set(self.ops) - set(ALL_OPS)
        if bad or not self.ops:
            raise SlimError(f"--lowrank-ops: unknown kind(s) {sorted(bad)}; choose from matmul,gemm,conv")
        if self.conv_svd not in ("channel", "spatial", "auto"):
            raise SlimError(f"--conv-svd must be channel, spatial or auto, got {self.conv_svd!r}")
        if self.allocation not in ("auto", "greedy", "lagrangian"):
            raise SlimError(f"low-rank allocation must be auto, greedy or lagrangian, got {self.allocation!r}")
        if self.allocation_loss not in LOSSES:
            raise SlimError(f"low-rank allocation loss must be one of {LOSSES}, got {self.allocation_loss!r}")
        if int(self.round_to) < 1:
            raise SlimError(f"--round-to must be a positive integer, got {self.round_to}")
