"""Optuna's TPE over a kernel's knobs: the offline proposer's `tpe` strategy.

Where the knob bandit moves one or two knobs from the champion, TPE samples a whole knob
configuration from a Parzen model of the configurations scored so far in this run. Each knob is
one parameter: an ordered index for numeric knobs (so "larger tiles were better" carries over to
neighbouring values), a categorical one otherwise. A configuration becomes knob edits on the
champion. The study lives in the proposer, so it learns from the outcomes of its own proposals
(read from `ctx.recent` at the next call); see docs/offline-proposer.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.samplers import TPESampler
from optuna.trial import Trial, TrialState

from knight.failure import IterationStatus
from knight.proposers.base import ProposalContext
from knight.tunables import Knob

STARTUP_TRIALS = 5  # random configurations before TPE models (Optuna's default 10 is half a budget)
MAX_DRAWS = 200  # samples per proposal before giving up on finding an untried configuration
FAILED_PENALTY = math.log(2.0)  # a failed candidate counts as twice as slow as the baseline

Config = dict[str, Any]  # knob name -> value

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _ordinal(values: tuple[Any, ...]) -> bool:
    """Whether a knob's allowed values are numbers (searched as an ordered index)."""
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _distribution(values: tuple[Any, ...]) -> BaseDistribution:
    """The search distribution over the indices of a knob's allowed values."""
    if _ordinal(values) and list(values) == sorted(values):
        return IntDistribution(0, len(values) - 1)
    return CategoricalDistribution(list(range(len(values))))


@dataclass
class _Pending:
    """A proposed configuration waiting for its outcome (the iteration that evaluates it)."""

    iteration: int
    trial: Trial


@dataclass
class TPESearch:
    """One Optuna study per knob space, fed with the outcomes of its own proposals."""

    seed: int
    _study: optuna.Study | None = None
    _space: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    _pending: list[_Pending] = field(default_factory=list)

    def choose(
        self, ctx: ProposalContext, knobs: dict[str, Knob], untried: Callable[[Config], bool]
    ) -> Config | None:
        """TPE's first sampled configuration for which `untried` holds, or None after MAX_DRAWS."""
        self._ensure_study(ctx, knobs)
        self._learn(ctx)
        assert self._study is not None
        for _ in range(MAX_DRAWS):
            trial = self._study.ask()
            config = {name: values[_suggest(trial, name, values)] for name, values in self._space}
            if untried(config):
                self._pending.append(_Pending(ctx.iteration, trial))
                return config
            # Tried already (the champion, or in this run or another): a failed trial is no
            # observation for TPE, and the sampler's generator has moved on for the next draw.
            self._study.tell(trial, state=TrialState.FAIL)
        return None

    def _ensure_study(self, ctx: ProposalContext, knobs: dict[str, Knob]) -> None:
        """A fresh study (holding the champion's score) when the knob space is new."""
        space = tuple((name, tuple(knobs[name].allowed)) for name in sorted(knobs))
        if self._study is not None and space == self._space:
            return
        sampler = TPESampler(seed=self.seed, n_startup_trials=STARTUP_TRIALS)
        self._study = optuna.create_study(direction="minimize", sampler=sampler)
        self._space, self._pending = space, []
        if ctx.champion_score_ns and ctx.baseline_score_ns:
            params = {
                name: values.index(knobs[name].value)
                for name, values in space
                if knobs[name].value in values
            }
            if len(params) == len(space):  # the champion is a point of the space
                self._study.add_trial(
                    optuna.create_trial(
                        params=params,
                        distributions={name: _distribution(values) for name, values in space},
                        value=math.log(ctx.champion_score_ns / ctx.baseline_score_ns),
                    )
                )

    def _learn(self, ctx: ProposalContext) -> None:
        """Tell the study the outcome of every pending proposal the context now reports."""
        assert self._study is not None
        by_number = {a.number: a for a in ctx.recent}
        still: list[_Pending] = []
        for pending in self._pending:
            attempt = by_number.get(pending.iteration)
            if attempt is not None:
                self._study.tell(pending.trial, objective(ctx, attempt.score_ns, attempt.status))
            elif pending.iteration >= ctx.iteration:
                still.append(pending)  # proposed again for this iteration (not recorded yet)
            else:  # never recorded (e.g. the loop stopped), or out of the recent window
                self._study.tell(pending.trial, state=TrialState.FAIL)
        self._pending = still


def _suggest(trial: Trial, name: str, values: tuple[Any, ...]) -> int:
    """The index of the value the trial picks for knob `name`."""
    dist = _distribution(values)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high)
    return trial.suggest_categorical(name, list(range(len(values))))


def objective(ctx: ProposalContext, score_ns: float | None, status: IterationStatus) -> float:
    """What TPE minimises: log of the candidate's score over the baseline's (penalty if failed)."""
    base = ctx.baseline_score_ns
    if status is IterationStatus.failed or score_ns is None or not base:
        return FAILED_PENALTY
    return math.log(score_ns / base)
