"""The calibration side of the prune pass: exits, streamed statistics, data importance, sensitivity and
search allocation, repair and the fidelity report, sharing one evaluator and one set of statistics."""
from __future__ import annotations

import itertools
import time

from onnxslim.calibration import load_calibration

from .data_importance import activation_scores, collect_channel_stats, reconstruction_scores
from onnxslim.runtime import tapped_session

from .evaluate import Evaluator, parametric_model
from .exits import find_exits
from .plan_state import plan_state, pruned_exits
from .repair import collect, repair
from .sensitivity import sensitivity_plan
from .stats_cache import StepStats
from .allocate import budget_plan
from .search import search_plan


class Calibrated:
    def __init__(self, model, analysis, groups, ctx, config, real: bool):
        self.model = model
        self.ctx = ctx
        self.config = config
        self.real = real
        self.groups = groups
        self.dataset = ctx.calibration if ctx.calibration is not None else load_calibration(
            None, model, input_shapes=ctx.input_shapes, seed=ctx.seed)
        self.exits, self.skipped = find_exits(analysis, groups)
        self.group_of_exit = {e.node: e.group.id for e in self.exits}
        self._original_stats = None
        self._evaluator = None
        self._parametric = None
        self._step_stats = None
        self.state = None
        self.repaired_exits = []
        self.passes = 0

    # -- data ------------------------------------------------------------------------------------------
    def _batches(self):
        return self.dataset.batches(self.config.calib_batch)

    def _n_batches(self) -> int:
        return -(-len(self.dataset) // self.config.calib_batch)

    def subset(self) -> list[dict]:
        n = -(-min(self.config.fidelity_samples, len(self.dataset)) // self.config.calib_batch)
        return list(itertools.islice(self._batches(), max(n, 1)))

    def evaluator(self) -> Evaluator:
        if self._evaluator is None:
            self._evaluator = Evaluator(self.model, self.exits, self.subset())
        return self._evaluator

    def parametric(self):
        if self._parametric is None:
            self._parametric = parametric_model(self.model, self.exits)
        return self._parametric

    def _fit_batches(self):
        """Batches the allocation's refits learn from: the calibration set minus the fidelity subset when at
        least as many samples remain, so the loss that ranks plans is measured on held-out samples (a refit
        scored on its own samples hides overfitting, e.g. of 7x7 layers refit from 64 images)."""
        n_eval = len(self.subset())
        n_all = self._n_batches()
        if n_all - n_eval >= n_eval:
            return itertools.islice(self._batches(), n_eval, None), n_all - n_eval
        return self._batches(), n_all

    def allocation_stats(self, state=None):
        batches, n = self._fit_batches()
        if state is None and n == self._n_batches():  # fitting on every batch: the same pass as original_stats
            return self.original_stats()
        with self.ctx.progress("calibrating", total=n) as bar:
            if state is None:
                stats = collect(self.model, None, self.exits, None, batches,
                                per_sample=self.config.positions_per_sample, seed=self.ctx.seed, progress=bar)
            else:
                if self._step_stats is None:  # the sensitivity steps: only what a step changed is collected again
                    self._step_stats = StepStats(self.model, self.parametric(), self.exits, list(batches),
                                                 per_sample=self.config.positions_per_sample, seed=self.ctx.seed,
                                                 residual=self.config.residual_targets)
                stats = self._step_stats.stats(state, progress=bar)
        self.passes += 1
        return stats

    def original_stats(self):
        """Exit statistics of the original model over the whole calibration set (one streamed pass)."""
        if self._original_stats is None:
            with self.ctx.progress("calibrating", total=self._n_batches()) as bar:
                self._original_stats = collect(self.model, None, self.exits, None, self._batches(),
                                               per_sample=self.config.positions_per_sample, seed=self.ctx.seed, progress=bar)
            self.passes += 1
        return self._original_stats

    # -- importance ----------------------------------------------------------------------------------
    def scores(self, criterion: str) -> tuple[dict, dict]:
        by_group = {}
        for e in self.exits:
            by_group.setdefault(e.group.id, []).append(e)
        scores, used = {}, {}
        if criterion == "reconstruction":
            stats = self.original_stats()
            for g in self.groups:
                s = reconstruction_scores(g, by_group.get(g.id, []), stats, prior_rows=self.config.importance_prior)
                if s is not None:
                    scores[g.id], used[g.id] = s, criterion
            return scores, used
        inputs = list(dict.fromkeys(e.input for e in self.exits))
        if not inputs:
            return scores, used
        session, names = tapped_session(self.model, inputs)
        with self.ctx.progress("calibrating", total=self._n_batches()) as bar:
            stats = collect_channel_stats(self.exits, session, names, self._batches(), want_rank=criterion == "hrank", progress=bar)
        self.passes += 1
        for g in self.groups:
            s = activation_scores(g, by_group.get(g.id, []), stats, criterion)
            if s is not None:
                scores[g.id], used[g.id] = s, criterion
        return scores, used

    # -- allocation ----------------------------------------------------------------------------------
    def allocate(self, method: str, scores: dict, macs, align):
        cfg = self.config
        if method == "sensitivity":
            first = [True]

            def stats_for(state):
                if first[0]:
                    first[0] = False
                    return self.allocation_stats()
                return self.allocation_stats(state)
            plan, state, trace = sensitivity_plan(self.groups, scores, self.exits, self.evaluator(), stats_for, macs, align,
                                                  cfg.target, ridge=cfg.ridge, prior_rows=cfg.repair_prior, step=cfg.sensitivity_step,
                                                  candidates=cfg.sensitivity_candidates, progress=self.ctx.progress)
            return plan, state, trace
        start = budget_plan(self.groups, scores, cfg.target, macs, align, "global")
        plan, trace = search_plan(self.groups, scores, self.exits, self.allocation_stats(), self.evaluator(), macs, align,
                                  cfg.target, ridge=cfg.ridge, prior_rows=cfg.repair_prior, time_budget=cfg.search_time, seed=self.ctx.seed,
                                  progress=self.ctx.progress, start=start)
        return plan, None, trace

    # -- repair and fidelity -------------------------------------------------------------------------
    def finish(self, plan: dict, repair_on: bool, start=None) -> dict:
        cfg = self.config
        evaluator = self.evaluator()
        masked = plan_state(self.exits, plan)
        fidelity = {"samples": sum(len(next(iter(b.values()))) for b in evaluator.batches),
                    "before_repair": evaluator.fidelity(masked)}
        exits_report = {}
        if repair_on:
            started = time.perf_counter()
            # start from refit weights (the sensitivity's state, else a one-shot refit from the original
            # model's statistics): exits repaired later in the same wave then see inputs close to final
            state = start.copy() if start is not None else plan_state(self.exits, plan, self.original_stats(), cfg.ridge, cfg.repair_prior)
            targets = pruned_exits(self.exits, plan)
            exits_report = repair(self.model, targets, plan, state, self.dataset,
                                  ridge=cfg.ridge, prior_rows=cfg.repair_prior, batch_size=cfg.calib_batch, per_sample=cfg.positions_per_sample,
                                  passes=cfg.repair_passes, seed=self.ctx.seed, progress=self.ctx.progress,
                                  loss=evaluator.loss, residual=cfg.residual_targets)
            self.passes += min(cfg.repair_passes, len(targets))
            fidelity["after_repair"] = evaluator.fidelity(state)
            fidelity["repair_seconds"] = round(time.perf_counter() - started, 2)
            self.state, self.repaired_exits = state, targets
        return {"fidelity": fidelity, "exits": exits_report, "skipped_exits": self.skipped}

    def describe(self) -> dict:
        return {**self.dataset.describe(), "data_passes": self.passes, "modelled_exits": len(self.exits),
                "network_evaluations": self._evaluator.evaluations if self._evaluator else 0}
