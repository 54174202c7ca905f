"""Exit statistics of the sensitivity steps, recollected only where a step changed them (issue 11, run time).

Each sensitivity step needs the statistics of every exit: inputs from the current (parametric) model,
targets from the original model, at sampled output positions of the same fitting batches. Collected from
scratch (repair.collect) that is two whole-network passes per step plus a Gram update per exit and batch.
Two parts repeat exactly from step to step:

- the original model's targets: the same batches through the same tapped session, sampled at the same
  positions (the generator is seeded the same each step and its draws depend on shapes only, so the
  positions are drawn once). They are kept, sampled, up to `cap_bytes`; batches past the cap run the
  original model each time, as before.
- the statistics of an exit whose tensors (input, and the residual skip) are computed before the first
  node reading a weight that changed since the last collection: those tensors, and so the statistics,
  are the last collection's.

- the current model's tensors before that node: the last collection's are kept (the later, smaller ones
  first, up to `tap_bytes`), and when they hold everything the network after that node reads, only that
  part runs (a slice of the tapped model, suffix.py). Its inputs are tapped tensors, graph outputs of the
  whole tapped model, which onnxruntime fuses with nothing; every node after them has the same consumers
  and outputs as in the whole model and the same optimization level, so it computes the same values.

So every number is computed by the same operations on the same values: the statistics, the plan and the
model are those of repair.collect (tests/test_prune_stats_cache.py).
"""
from __future__ import annotations

import numpy as np

from onnxslim.runtime import fusion_loses_tap, run_once, session, tapped_session, with_outputs

from .evaluate import State
from .exits import Exit
from .repair import ExitStats
from .suffix import Slicer

CAP_BYTES = 512 * 2**20  # sampled original targets kept (EfficientNet-Lite0, 32 fitting images: ~0.2 GB)
# current-model tensors kept to start the next collection after the changed node: the latest first, which
# are the smallest and the most useful (EfficientNet-Lite0: 30 of its 33 tapped tensors take 242 MB for 32
# images, the last 25 about 60 MB; cutting early saves little of a pass anyway)
TAP_BYTES = 96 * 2**20


class StepStats:
    """`stats(state)` -> {exit node: ExitStats}, equal to repair.collect(original_model, current_model,
    exits, state, batches, per_sample=, seed=, residual=) without `together`."""

    def __init__(self, original_model, current_model, exits: list[Exit], batches: list[dict], *, per_sample: int,
                 seed: int, residual: bool, cap_bytes: int = CAP_BYTES, tap_bytes: int = TAP_BYTES):
        self.original_model, self.current_model = original_model, current_model
        self.exits, self.batches = exits, batches
        self.per_sample, self.seed, self.cap_bytes, self.tap_bytes = per_sample, seed, cap_bytes, tap_bytes
        self.skips = {e.node: e.residual for e in exits if residual and e.residual is not None}
        self.in_names = list(dict.fromkeys([e.input for e in exits] + [r[1] for r in self.skips.values()]))
        self.out_names = list(dict.fromkeys(self.skips[e.node][0] if e.node in self.skips else e.output for e in exits))
        nodes = current_model.graph.node
        self.data_inputs = [i.name for i in original_model.graph.input]
        self.produced = {o: i for i, n in enumerate(nodes) for o in n.output}
        self.first_use: dict[str, int] = {}
        for i, n in enumerate(nodes):
            for name in n.input:
                self.first_use.setdefault(name, i)
        self._rng = np.random.default_rng(seed)
        self._where: list[dict] = []             # per batch: {exit node: sampled positions}
        self._kept_bytes = 0
        self._targets: list[dict | None] = []   # per batch: {exit node: sampled original rows}, None past the cap
        self._feeds: dict | None = None          # the weights of the last collection
        self._stats: dict[str, ExitStats] = {}
        self._taps: list[dict] = []              # per batch: the kept current-model tensors
        self._kept_taps: set[str] | None = None
        self._slicer = None
        self._orig = None                        # the original model's tapped session, while needed

    def stats(self, state: State, progress=None) -> dict[str, ExitStats]:
        feeds = state.feeds()
        fresh, start = self._changed_exits(feeds)
        stats = {e.node: ExitStats(e) if e.node in fresh else self._stats[e.node] for e in self.exits}
        if fresh:
            self._collect(feeds, [e for e in self.exits if e.node in fresh], stats, progress, start)
        elif progress is not None:
            progress.update(len(self.batches))
        self._feeds, self._stats = feeds, stats
        return stats

    def _changed_exits(self, feeds: dict) -> tuple[set[str], int | None]:
        """(exits whose statistics may differ from the last collection's, the first node reading a changed
        weight); all exits and None the first time."""
        if self._feeds is None:
            return {e.node for e in self.exits}, None
        changed = [name for name, value in feeds.items() if not np.array_equal(value, self._feeds[name])]
        start = min((self.first_use.get(name, -1) for name in changed), default=None)
        if start is None:
            return set(), None
        start = max(start, 0)  # a weight no node reads cannot change anything, but be safe
        fresh = {e.node for e in self.exits if any(self.produced.get(name, -1) >= start for name in self._reads(e))}
        return fresh, start

    def _reads(self, e: Exit) -> list[str]:
        return [e.input] + ([self.skips[e.node][1]] if e.node in self.skips else [])

    def _collect(self, feeds: dict, exits: list[Exit], stats: dict, progress, start: int | None) -> None:
        part = self._suffix(start, exits)
        for b, feed in enumerate(self.batches):
            got = {**feed, **self._current(b, feed, feeds, part)}  # an exit or its skip may read a graph input
            targets = self._remember(b, feed, got) if b == len(self._targets) else self._targets[b]
            if targets is None:  # past the memory cap: the original model again, as repair.collect does
                targets = self._sampled_targets(b, _run(*self._original(), feed))
            for e in exits:
                where = self._where[b][e.node]
                y = targets[e.node]
                if e.node in self.skips:
                    y = y - e.take_y(got[self.skips[e.node][1]], where)
                    if e.residual_offset is not None:  # the bias Add between the exit and the sum
                        full = got[self.skips[e.node][1]].shape
                        y = y - e.take_y(np.broadcast_to(e.residual_offset, full), where)
                stats[e.node].update(e.take_x(got[e.input], where), y.astype(np.float32))
            del got
            if progress is not None:
                progress.update(1)
        if all(t is not None for t in self._targets):
            self._orig = None

    def _current(self, b: int, feed: dict, feeds: dict, part) -> dict:
        """The tapped current-model tensors of batch b: from the kept ones and the slice `part` when given."""
        if part is None or b >= len(self._taps):
            got = self._whole(feed, feeds)
        else:
            sess, inputs, outputs = part
            known = {**feed, **feeds, **self._taps[b]}
            values = run_once(sess, {n: known[n] for n in inputs}, outputs, "onnxruntime failed on a calibration batch")
            got = {**self._taps[b], **dict(zip(outputs, values))}
        kept = {n: got[n] for n in self._kept_names(got)}
        if b < len(self._taps):
            self._taps[b] = kept
        else:
            self._taps.append(kept)
        return got

    def _kept_names(self, got: dict) -> set[str]:
        """The tapped tensors kept between collections: the latest in the network first, up to tap_bytes."""
        if self._kept_taps is None:
            per_batch = self.tap_bytes / max(len(self.batches), 1)
            self._kept_taps, used = set(), 0
            for name in sorted(self.in_names, key=lambda n: -self.produced.get(n, -1)):
                if name not in got:  # a graph input an exit reads: every run is fed it anyway
                    continue
                used += got[name].nbytes
                if used > per_batch:
                    break
                self._kept_taps.add(name)
        return self._kept_taps

    def _suffix(self, start: int | None, exits: list[Exit]):
        """(session, inputs, outputs) of the tapped model from node `start` on, when the kept tensors hold
        every tensor it and `exits` read from before `start`; else None (the whole model runs)."""
        if start is None or not self._taps or self._kept_taps is None or not self._tapped_slicer().sliceable:
            return None
        sess, inputs, outputs = self._slicer.part(start, len(self._slicer.nodes))
        needed = {n for n in inputs if n not in self._slicer.weights}
        needed |= {n for e in exits for n in self._reads(e) if self.produced.get(n, -1) < start}
        needed -= set(self.data_inputs)
        if not needed <= self._kept_taps:
            return None
        return sess, inputs, outputs

    def _tapped_slicer(self) -> Slicer:
        if self._slicer is None:
            tapped = with_outputs(self.current_model, self.in_names)
            weights = {i.name for i in self.current_model.graph.input} - set(self.data_inputs)
            self._slicer = Slicer(tapped, weights, basic=fusion_loses_tap(self.current_model, self.in_names))
        return self._slicer

    def _whole(self, feed: dict, feeds: dict) -> dict:
        """The whole tapped current model: as runtime.tapped_session's, but as the slice from node 0, whose
        session shares the slices' arena instead of keeping one of its own."""
        slicer = self._tapped_slicer()
        if not slicer.sliceable:
            return _run(*tapped_session(self.current_model, self.in_names), {**feed, **feeds})
        sess, inputs, outputs = slicer.part(0, len(slicer.nodes))
        known = {**feed, **feeds}
        return dict(zip(outputs, run_once(sess, {n: known[n] for n in inputs}, outputs, "onnxruntime failed on a calibration batch")))

    def _original(self):
        """(session, names) of the original model tapped at the targets, as runtime.tapped_session builds it
        but not kept there: once the targets are kept it is dropped with its arena."""
        if self._orig is None:
            tapped = with_outputs(self.original_model, self.out_names)
            self._orig = (session(tapped, basic=fusion_loses_tap(self.original_model, self.out_names)),
                          [o.name for o in tapped.graph.output])
        return self._orig

    def _remember(self, b: int, feed: dict, got: dict) -> dict:
        """Batch b's positions (drawn in repair.collect's order: batch by batch, exit by exit, from one
        generator) and, under the cap, its sampled original targets."""
        original = _run(*self._original(), feed)
        where = {}
        for e in self.exits:
            name = self.skips[e.node][0] if e.node in self.skips else e.output
            where[e.node] = e.sample(got[e.input].shape, original[name].shape, self._rng, self.per_sample)
        self._where.append(where)
        targets = self._sampled_targets(b, original)
        size = sum(y.nbytes for y in targets.values())
        keep = self._kept_bytes + size <= self.cap_bytes
        self._kept_bytes += size if keep else 0
        self._targets.append(targets if keep else None)
        return targets

    def _sampled_targets(self, b: int, original: dict) -> dict:
        out = {}
        for e in self.exits:
            name = self.skips[e.node][0] if e.node in self.skips else e.output
            out[e.node] = np.ascontiguousarray(e.take_y(original[name], self._where[b][e.node]))
        return out



def _run(sess, names, feed) -> dict:
    return dict(zip(names, run_once(sess, feed, names, "onnxruntime failed on a calibration batch")))
