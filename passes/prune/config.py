"""The prune pass's config: its fields, their checks and the command-line options that set them."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from onnxslim.errors import SlimError
from onnxslim.protocol import as_tuple, option, switch

from .data_importance import DATA_CRITERIA
from .importance import WEIGHT_CRITERIA

DEFAULT_ROUND_TO = 16  # benchmarks/RESULTS.md: on onnxruntime CPU, widths rounded to 16 ran faster than 8 (and unaligned slower than unpruned)

ALLOCATIONS = ("global", "uniform", "sensitivity", "search")


@dataclass
class PruneConfig:
    # uniform fraction of channels removed in every prunable group
    ratio: float | None = switch("--prune", "prune_ratio", help="Remove this fraction of channels in every prunable group.")
    # or: prune until MACs <= this fraction of the original
    target_macs: float | None = switch("--target-macs", help="Prune until MACs <= this fraction of the original.")
    # or: until the latency measured per node (latency.py) <= this fraction
    target_latency: float | None = switch(
        "--target-latency", help="Prune until the latency estimated from onnxruntime's per-node profile (1 thread) <= this fraction.")
    latency_threads: int = 1  # onnxruntime threads the latency model is profiled with (1: stable on shared cores)
    # weight: l1 | l2 | bn | random; data: activation | apoz | hrank | reconstruction; auto: the better of l1
    # and reconstruction on held-out calibration samples, rebuilt on all samples (choose.py; ~3 plan builds).
    # None: auto with real calibration data (>= 16 samples) and a target, else l1. Measured on EfficientNet-Lite0
    # (64 calibration images, 236 others): auto matched the better criterion at 80% and 70% of the MACs
    # (benchmarks/RESULTS.md, issue 11), where l1 alone lost 12 points at 70% and reconstruction alone 7 at 80%
    importance: str | None = field(default=None, metadata=option(
        "--importance", default=None,
        help="Channel importance: l1, l2, bn, random; with --calib also activation, apoz, hrank, reconstruction, "
             "or auto (with a target: plans from l1 and reconstruction compared on held-out calibration samples, "
             "the better rebuilt on all; costs ~3 plan builds). Default: auto with --calib data (16+ samples) and "
             "a target, else l1."))
    # for a target: global | uniform | sensitivity | search; None: sensitivity with real calibration data
    # (EfficientNet-Lite0 at 90% MACs: 82.6% top-1 against global's 55.9%), else global
    allocation: str | None = field(default=None, metadata=option(
        "--allocation", default=None,
        help="For a target: global, uniform, sensitivity, search. Default: sensitivity with --calib data, else global."))
    round_to: int = field(default=DEFAULT_ROUND_TO, metadata=option(
        "--round-to", type=int, default=None, help="Kept widths are multiples of N (default 16), low-rank ranks too (default 8)."))
    min_channels: int = field(default=1, metadata=option(
        "--min-channels", type=int, default=1, show_default=True, help="Never keep fewer channels in a group."))
    exclude: tuple = field(default_factory=tuple, metadata=option(
        "--exclude", multiple=True, convert=as_tuple, help="Node name to leave untouched (repeatable)."))
    # -- calibration-driven pruning and repair (need ctx.calibration; random data when absent) --
    # least-squares refit of the pruned groups' exits; None = on iff real data
    repair: bool | None = field(default=None, metadata=option(
        "--repair/--no-repair", default=None, help="Refit layers after pruning on calibration data (default: on with real --calib)."))
    ridge: float = 0.05  # repair shrinkage toward the original weights, relative to the mean input energy
    repair_prior: float = 8.0  # extra shrinkage per (features / rows): strong where rows are few (Gemm, 7x7 maps)
    importance_prior: float = 8.0  # the same shrinkage for the reconstruction importance's Gram (data_importance.py)
    calib_batch: int = 8  # calibration batch size streamed through onnxruntime
    positions_per_sample: int = 256  # output positions sampled per image and exit for the Gram statistics
    residual_targets: bool = True  # a refit branch feeding a residual Add restores the sum (absorbs the skip's drift)
    repair_passes: int = 8  # data passes of the layer-by-layer repair (exits split into this many waves)
    fidelity_samples: int = 32  # calibration samples the allocation's loss and the fidelity report use
    search_time: float = field(default=60.0, metadata=option(  # seconds for allocation=search
        "--search-time", type=float, default=None, help="Seconds for --allocation search."))
    # one budget with low-rank splits (passes/joint): a weight MatMul/Gemm no cut group touches may be split instead
    lowrank_in_budget: bool = field(default=False, metadata=option(
        "--lowrank-in-budget", is_flag=True, default=None,
        help="With --target-macs and --calib: the allocation may also split weight MatMul/Gemm layers into two low-rank "
             "factors, choosing per step a cut or a split by calibration loss per MAC saved."))
    sensitivity_step: float = 0.02  # fraction of the total MACs removed per sensitivity step
    sensitivity_candidates: int = 8  # tries per sensitivity step measured through the network (4 -> 8: 69.9 -> 73.3% at 80% MACs)

    def resolved(self, real_data: bool, can_choose: bool = False) -> "PruneConfig":
        """This config with the default importance and allocation (see their fields) made concrete;
        `can_choose`: the calibration data is real and large enough for `auto` (choose.can_choose)."""
        data_driven = real_data and self.target is not None
        resolved = self
        if self.importance is None:
            resolved = dataclasses.replace(resolved, importance="auto" if data_driven and can_choose else "l1")
        if self.allocation is None:
            resolved = dataclasses.replace(resolved, allocation="sensitivity" if data_driven else "global")
        return resolved

    def check(self) -> None:
        if sum(x is not None for x in (self.ratio, self.target_macs, self.target_latency)) != 1:
            raise SlimError("give exactly one of --prune RATIO, --target-macs FRACTION or --target-latency FRACTION")
        for value, flag, low_open in ((self.ratio, "--prune", False), (self.target_macs, "--target-macs", True),
                                      (self.target_latency, "--target-latency", True)):
            if value is not None and low_open and not 0 < value <= 1:
                raise SlimError(f"{flag} {value:g}: the fraction must be in (0, 1]")
            if value is not None and not low_open and not 0 <= value < 1:
                raise SlimError(f"{flag} {value:g}: the ratio must be in [0, 1)")
        self._check_criteria()
        if self.round_to < 1 or self.min_channels < 1:
            raise SlimError("--round-to and --min-channels must be >= 1")
        if self.ridge < 0 or self.repair_prior < 0 or self.calib_batch < 1 or self.positions_per_sample < 1 or self.repair_passes < 1 or self.fidelity_samples < 1:
            raise SlimError("the repair's shrinkage must be >= 0; batch, positions, passes and fidelity samples must be >= 1")
        if self.search_time < 0 or not 0 < self.sensitivity_step < 1 or self.sensitivity_candidates < 1:
            raise SlimError("--search-time must be >= 0, the sensitivity step in (0, 1), candidates >= 1")

    def _check_criteria(self) -> None:
        if self.importance is not None and self.importance not in WEIGHT_CRITERIA + DATA_CRITERIA + ("auto",):
            raise SlimError(f"unknown importance '{self.importance}' (choose from {', '.join(WEIGHT_CRITERIA + DATA_CRITERIA)}, auto)")
        if self.importance == "auto" and self.target is None:
            raise SlimError("--importance auto needs --target-macs or --target-latency (it compares plans at one budget)")
        if self.allocation is not None and self.allocation not in ALLOCATIONS:
            raise SlimError(f"unknown allocation '{self.allocation}' (choose from {', '.join(ALLOCATIONS)})")
        if self.allocation in ("sensitivity", "search") and self.target is None:
            raise SlimError(f"--allocation {self.allocation} needs --target-macs or --target-latency")

    @property
    def target(self) -> float | None:
        return self.target_macs if self.target_macs is not None else self.target_latency

    @property
    def needs_data(self) -> bool:
        return self.importance in DATA_CRITERIA or self.allocation in ("sensitivity", "search") or bool(self.repair)
