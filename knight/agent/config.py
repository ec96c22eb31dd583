"""What a run is asked to do (`RunConfig`), and resuming a stored run with changed limits."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from knight.agent.outage import DEFAULT_MAX_OUTAGE_S
from knight.errors import KnightError, UsageError
from knight.store import RunInfo, RunStore

# RunConfig fields kept in the run's `config` JSON (the rest have columns of their own).
_IN_CONFIG_JSON = (
    "min_gain",
    "fix_rounds",
    "max_proposer_errors",
    "max_outage_s",
    "parallel",
    "beam",
)


@dataclass(frozen=True)
class RunConfig:
    """What the user asked for."""

    budget: int = 10
    seed: int = 0
    max_cost: float | None = None
    time_limit_s: float | None = None  # of each session of the run (resuming starts a new one)
    # Above zero noise (the simulator is deterministic) yet small: single-idea patches with small
    # verified gains are accepted, so nothing pushes a proposer to bundle ideas.
    min_gain: float = 1.01
    fix_rounds: int = 3
    max_proposer_errors: int = 3  # consecutive failed proposals (not outages) that pause the run
    max_outage_s: float = DEFAULT_MAX_OUTAGE_S  # provider outage waited out before pausing
    parallel: int = 1  # candidates per round: proposer calls in flight and evaluations at once
    beam: int = 1  # best distinct kernels kept as parents (1: always the champion)
    extra: dict[str, Any] = field(default_factory=dict)  # proposer settings, kept with the run

    def stored_config(self) -> dict[str, Any]:
        """The run's `config` JSON: the settings without a column of their own."""
        return {**{name: getattr(self, name) for name in _IN_CONFIG_JSON}, **self.extra}

    @classmethod
    def of_run(cls, run: RunInfo) -> RunConfig:
        """The configuration a stored run was last started (or resumed) with."""
        stored = dict(run.config)
        known = {f.name: f.default for f in fields(cls) if f.name in _IN_CONFIG_JSON}
        values = {name: stored.pop(name, default) for name, default in known.items()}
        return cls(
            budget=run.budget,
            seed=run.seed,
            max_cost=run.max_cost,
            time_limit_s=run.time_limit_s,
            extra=stored,
            **values,
        )


@dataclass(frozen=True)
class ResumeOverrides:
    """Flags given with `--resume`: limits that apply to the rest of the run (None: keep)."""

    budget: int | None = None
    max_cost: float | None = None
    time_limit_s: float | None = None
    min_gain: float | None = None
    fix_rounds: int | None = None
    max_outage_s: float | None = None
    parallel: int | None = None
    beam: int | None = None
    proposer_settings: dict[str, Any] = field(default_factory=dict)  # script, command, model

    def given(self) -> dict[str, Any]:
        """The limits that were actually given."""
        names = [f.name for f in fields(self) if f.name != "proposer_settings"]
        return {name: v for name in names if (v := getattr(self, name)) is not None}


def open_run(
    store: RunStore, run_id: int, problem_id: str, overrides: ResumeOverrides
) -> tuple[RunInfo, RunConfig]:
    """Reopen run `run_id` for more iterations with `overrides` applied and recorded.

    Raises KnightError when the run optimises another problem or is still running elsewhere.
    """
    run = store.run(run_id)
    if run.problem_id != problem_id:
        raise KnightError(f"run {run_id} optimises {run.problem_id}, not {problem_id}")
    if overrides.budget is not None and overrides.budget < 1:
        raise UsageError("--budget must be at least 1")
    for name in ("parallel", "beam"):
        value = getattr(overrides, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name} must be at least 1")
    config = replace(RunConfig.of_run(run), **overrides.given())
    settings = {k: v for k, v in overrides.proposer_settings.items() if v is not None}
    config = replace(config, extra={**config.extra, **settings})
    run = store.reopen_run(
        run_id,
        budget=config.budget,
        max_cost=config.max_cost,
        time_limit_s=config.time_limit_s,
        config=config.stored_config(),
    )
    return run, config


def refuse_identity_changes(run: RunInfo, **given: object) -> None:
    """With `--resume`, what defines a run (problem, machine, seed, proposer) must match it:
    a different value is refused with a UsageError, never silently ignored; None means not given."""
    stored = {
        "problem": run.problem_id,
        "machine": run.machine,
        "seed": run.seed,
        "proposer": run.proposer,
    }
    for name, value in given.items():
        if value is not None and value != stored[name]:
            raise UsageError(
                f"run {run.id} was started with --{name} {stored[name]}; a resumed run keeps it "
                f"(drop --{name} {value}, or start a new run)"
            )
