"""The agent loop in process: a FakeEvaluator, an in-memory store and scripted proposers.

Fix rounds, cost and time limits, the pause after repeated proposer failures, outages that do
not spend the budget, held-out rejection, Ctrl-C, and resuming after a crash at every stage.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from knight.agent.config import ResumeOverrides, RunConfig, refuse_identity_changes
from knight.agent.loop import Runner
from knight.errors import UsageError
from knight.evaluation.fake import FakeEvaluator, FakeOutcome
from knight.failure import Category, Failure, IterationStatus, RunStatus
from knight.problems import Problem, load_problem
from knight.problems.spec import load_problem_dir
from knight.proposal import Edit, ModelCall, Proposal
from knight.proposers import ProposalContext, ProposalResult
from knight.store import RunStore, open_store

BASELINE_NS = 100.0
COLS = "COLS_PER_TILE = {}  # columns per normalise / multiply / store step"
LOAD = 'LOAD_ENGINE = "{}"  # engine that triggers the DMAs (loads and stores)'
SCALE = 'SCALE_ENGINE = "{}"  # engine that multiplies x by rstd'
RULES = {  # the first marker found decides: failures first, then the engines, then tiles
    SCALE.format("gpsimd"): FakeOutcome(failure=Category.shape_error),
    SCALE.format("scalar"): FakeOutcome(failure=Category.mismatch_values),
    LOAD.format("scalar"): FakeOutcome(score_ns=40.0),
    LOAD.format("gpsimd"): FakeOutcome(score_ns=30.0, heldout_failure=True),
    COLS.format(2048): FakeOutcome(score_ns=50.0),
    COLS.format(1024): FakeOutcome(score_ns=120.0),
    COLS.format(256): FakeOutcome(score_ns=150.0),
    COLS.format(128): FakeOutcome(score_ns=130.0),
}


def change(template: str, old: object, new: object, cost: float = 0.0) -> ProposalResult:
    """A proposal that replaces one knob line of the kernel."""
    edit = Edit(file="kernel.py", search=template.format(old), replace=template.format(new))
    calls = [ModelCall(model="test", cost_usd=cost)] if cost else []
    return ProposalResult(Proposal(hypothesis=f"set {new}", edits=[edit]), llm_calls=calls)


def no_match() -> ProposalResult:
    edit = Edit(file="kernel.py", search="LOAD_ENGINE = 'sync'\n", replace="LOAD_ENGINE = 'x'\n")
    return ProposalResult(Proposal(hypothesis="a typo", edits=[edit]))


def outage() -> ProposalResult:
    call = ModelCall(model="test", status="error", error="Anthropic API 429 rate_limit_error")
    return ProposalResult.failed(
        Category.proposer_error, "Anthropic API 429", transient=True, llm_calls=[call]
    )


Step = ProposalResult | BaseException


@dataclass
class ByNumber:
    """Proposals by iteration number (like the scripted proposer), follow-ups for fix rounds."""

    proposals: dict[int, Step | list[Step]]
    fixes: dict[int, list[Step]] = field(default_factory=dict)
    name: str = "test"
    seen: list[ProposalContext] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    def propose(self, ctx: ProposalContext) -> ProposalResult:
        self.seen.append(ctx)
        step = self.proposals.get(ctx.iteration)
        if isinstance(step, list):  # several answers to successive calls
            step = step.pop(0) if len(step) > 1 else step[0]
        if step is None:
            return ProposalResult.failed(
                Category.proposer_error, "script exhausted", exhausted=True
            )
        return _take(step)

    def fix(self, ctx: ProposalContext, failure: Failure) -> ProposalResult | None:
        self.failures.append(failure)
        left = self.fixes.get(ctx.iteration, [])
        return _take(left.pop(0)) if left else None


def _take(step: Step) -> ProposalResult:
    if isinstance(step, BaseException):
        raise step
    return step


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class Rig:
    problem: Problem
    store: RunStore
    evaluator: FakeEvaluator
    clock: FakeClock
    messages: list[str]

    def runner(self, proposer: ByNumber) -> Runner:
        events = Messages(self.messages)
        return Runner(
            self.store,
            self.problem,
            self.evaluator,
            proposer,
            events=events,
            clock=self.clock,
            sleep=self.clock.sleep,
        )

    def outcomes(self, run_id: int) -> list[tuple[str, str | None]]:
        rows = self.store.history(run_id)
        return [(r.status.value, r.category.value if r.category else None) for r in rows]


@dataclass
class Messages:
    lines: list[str]

    def iteration_started(self, number: int, budget: int) -> None:
        pass

    def iteration_finished(self, outcome: object, best_speedup: float) -> None:
        pass

    def message(self, text: str) -> None:
        self.lines.append(text)


# The loop never runs the kernel here: a fixed synthetic baseline in a copy of the rmsnorm problem
# keeps these tests independent of the real kernel's text.
BASELINE = f"""\
from knight.npu import nl

{LOAD.format("sync")}
{SCALE.format("vector")}
{COLS.format(512)}
TUNABLES = {{
    "LOAD_ENGINE": ["sync", "scalar", "gpsimd"],
    "SCALE_ENGINE": ["vector", "scalar", "gpsimd"],
    "COLS_PER_TILE": [128, 256, 512, 1024, 2048],
}}


def rmsnorm(x, gamma, out):
    pass
"""


@pytest.fixture(scope="module")
def problem(tmp_path_factory: pytest.TempPathFactory) -> Problem:
    real = load_problem("rmsnorm")
    root = tmp_path_factory.mktemp("problem") / "rmsnorm"
    shutil.copytree(real.root, root)
    (root / real.spec.baseline).write_text(BASELINE)
    return load_problem_dir(root)


@pytest.fixture
def rig(problem: Problem, store_url: str) -> Rig:
    """The loop's rig on a fresh store: in-memory SQLite, and a real PostgreSQL database."""
    store = open_store(store_url, "write", create=True)
    clock = FakeClock()
    yield Rig(problem, store, FakeEvaluator(BASELINE_NS, dict(RULES)), clock, [])
    store.close()


# ----------------------------------------------------------------------------- fix rounds


def test_a_patch_that_does_not_apply_is_fixed_in_a_later_round(rig: Rig) -> None:
    good = change(COLS, 512, 2048)
    proposer = ByNumber({1: no_match()}, fixes={1: [no_match(), good]})
    summary = rig.runner(proposer).start(RunConfig(budget=1, fix_rounds=3))

    assert rig.outcomes(summary.run_id) == [("accepted", None)]
    detail = rig.store.iteration(summary.run_id, 1)
    assert detail.fix_rounds == 2 and detail.score_ns == 50.0
    assert [f.category for f in proposer.failures] == [Category.patch_no_match] * 2
    assert "Nearest lines in the current file" in proposer.failures[0].for_proposer()
    assert summary.speedup == 2.0


def test_fix_rounds_are_bounded(rig: Rig) -> None:
    proposer = ByNumber({1: no_match()}, fixes={1: [no_match(), change(COLS, 512, 2048)]})
    summary = rig.runner(proposer).start(RunConfig(budget=1, fix_rounds=1))

    assert rig.outcomes(summary.run_id) == [("failed", "patch_no_match")]
    assert len(proposer.failures) == 1 and rig.store.iteration(summary.run_id, 1).fix_rounds == 1


def test_a_trace_failure_is_fixable_and_a_mismatch_is_not(rig: Rig) -> None:
    proposer = ByNumber(
        {1: change(SCALE, "vector", "gpsimd"), 2: change(SCALE, "vector", "scalar")},
        fixes={1: [change(COLS, 512, 2048)], 2: [change(COLS, 2048, 1024)]},
    )
    summary = rig.runner(proposer).start(RunConfig(budget=2))

    assert rig.outcomes(summary.run_id) == [("accepted", None), ("failed", "mismatch_values")]
    (failure,) = proposer.failures
    assert failure.category is Category.shape_error and failure.stage == "trace"


# ----------------------------------------------------------------------------- limits


def test_max_cost_stops_before_the_next_iteration(rig: Rig) -> None:
    values = {1: 1024, 2: 256, 3: 128, 4: 2048}
    proposer = ByNumber({n: change(COLS, 512, v, cost=0.4) for n, v in values.items()})
    summary = rig.runner(proposer).start(RunConfig(budget=10, max_cost=1.0))

    assert summary.iterations == 3 and summary.cost_usd == pytest.approx(1.2)
    assert (
        summary.stop_reason == "cost limit $1.00 reached" and summary.status is RunStatus.finished
    )


def test_time_limit_counts_this_session(rig: Rig) -> None:
    rig.evaluator.on_evaluate = lambda source, heldout: rig.clock.sleep(10.0)
    proposer = ByNumber({n: change(COLS, 512, v) for n, v in {1: 1024, 2: 256, 3: 128}.items()})
    summary = rig.runner(proposer).start(RunConfig(budget=10, time_limit_s=25))

    assert summary.iterations == 3 and summary.stop_reason == "time limit 25 s reached"


def test_repeated_proposer_failures_pause_the_run(rig: Rig) -> None:
    bad = ProposalResult.failed(Category.proposer_error, "Anthropic API 401 authentication_error")
    proposer = ByNumber({n: bad for n in range(1, 9)})
    summary = rig.runner(proposer).start(RunConfig(budget=8, max_proposer_errors=3))

    assert rig.outcomes(summary.run_id) == [("failed", "proposer_error")] * 3
    assert (
        summary.status is RunStatus.interrupted and "failed 3 times in a row" in summary.stop_reason
    )
    assert rig.store.run(summary.run_id).status is RunStatus.interrupted


def test_a_heldout_failure_rejects_an_otherwise_faster_candidate(rig: Rig) -> None:
    proposer = ByNumber({1: change(LOAD, "sync", "gpsimd"), 2: change(LOAD, "sync", "scalar")})
    summary = rig.runner(proposer).start(RunConfig(budget=2))

    assert rig.outcomes(summary.run_id) == [("rejected", "heldout_failure"), ("accepted", None)]
    failure = rig.store.iteration(summary.run_id, 1).failure
    assert failure is not None and failure.details["underlying"]["category"] == "mismatch_values"
    assert summary.best_score_ns == 40.0
    heldout_checks = [heldout for _, heldout in rig.evaluator.calls[1:]]
    assert heldout_checks == [False, True, False, True]  # only accepted candidates pay for it


# ----------------------------------------------------------------------------- outages


def test_a_provider_outage_spends_no_iteration(rig: Rig) -> None:
    proposer = ByNumber({1: [outage(), outage(), outage(), change(COLS, 512, 2048)]})
    summary = rig.runner(proposer).start(RunConfig(budget=1))

    assert rig.outcomes(summary.run_id) == [("accepted", None)]
    assert rig.clock.sleeps == [5.0, 10.0, 20.0]  # bounded, doubling backoff
    assert rig.store.progress(summary.run_id).proposer_outage_calls == 3
    assert rig.messages[-1].startswith("waiting for the model provider: Anthropic API 429")


def test_an_outage_longer_than_max_outage_pauses_the_run(rig: Rig) -> None:
    proposer = ByNumber({1: [outage()]})
    summary = rig.runner(proposer).start(RunConfig(budget=3, max_outage_s=60))

    assert summary.iterations == 0 and summary.status is RunStatus.interrupted
    assert "model provider was unavailable" in summary.stop_reason
    assert sum(rig.clock.sleeps) <= 60


# ----------------------------------------------------------------------------- crashes and resume

PLAN = {
    1: change(COLS, 512, 2048),
    2: no_match(),
    3: change(SCALE, "vector", "gpsimd"),
}
PLAN_FIXES = {2: [change(LOAD, "sync", "scalar")]}


def plan(crash: str | None = None) -> ByNumber:
    proposals: dict[int, Step | list[Step]] = dict(PLAN)
    fixes = {n: list(steps) for n, steps in PLAN_FIXES.items()}
    if crash == "propose":
        proposals[2] = RuntimeError("crash while proposing")
    if crash == "fix":
        fixes[2] = [RuntimeError("crash in a fix round")]
    return ByNumber(proposals, fixes)


def crash_evaluator(rig: Rig, heldout_stage: bool) -> Callable[[str, bool], None]:
    def hook(source: str, heldout: bool) -> None:
        if LOAD.format("scalar") in source and heldout == heldout_stage:
            raise RuntimeError("crash while evaluating")

    return hook


@pytest.fixture(scope="module")
def uninterrupted(problem: Problem) -> tuple[str, list[tuple[str, str | None]]]:
    """The plan run straight through: its champion and outcomes."""
    with open_store(":memory:", "write", create=True) as store:
        evaluator = FakeEvaluator(BASELINE_NS, dict(RULES))
        summary = Runner(store, problem, evaluator, plan()).start(RunConfig(budget=3))
        rows = Rig(problem, store, evaluator, FakeClock(), []).outcomes(summary.run_id)
    assert rows == [("accepted", None), ("accepted", None), ("failed", "shape_error")]
    return summary.champion_hash, rows


@pytest.mark.parametrize("stage", ["propose", "fix", "evaluate", "heldout", "record"])
def test_a_crash_at_any_stage_resumes_without_losing_or_duplicating(
    rig: Rig, stage: str, monkeypatch: pytest.MonkeyPatch, uninterrupted
) -> None:
    champion, expected_rows = uninterrupted

    if stage in ("evaluate", "heldout"):
        rig.evaluator.on_evaluate = crash_evaluator(rig, heldout_stage=stage == "heldout")
    if stage == "record":
        import knight.store.runs as runs

        real = runs._skill_events

        def failing(record):  # inside the transaction, after the iteration row was added
            if record.number == 2:
                raise RuntimeError("crash while recording")
            return real(record)

        monkeypatch.setattr(runs, "_skill_events", failing)
    with pytest.raises(RuntimeError, match="crash"):
        rig.runner(plan(stage)).start(RunConfig(budget=3))
    (run,) = rig.store.list_runs()
    assert run.status is RunStatus.running  # as a killed process leaves it
    assert [r.number for r in rig.store.history(run.id)] == [1]

    monkeypatch.undo()
    rig.evaluator.on_evaluate = None
    summary = rig.runner(plan()).resume(run.id)
    assert rig.outcomes(run.id) == expected_rows
    assert summary.champion_hash == champion and summary.status is RunStatus.finished


def test_ctrl_c_interrupts_the_run_and_resume_finishes_it(rig: Rig) -> None:
    proposer = plan()
    proposer.proposals[2] = KeyboardInterrupt()
    summary = rig.runner(proposer).start(RunConfig(budget=3))
    assert (
        summary.status is RunStatus.interrupted and summary.stop_reason == "interrupted by the user"
    )
    assert summary.iterations == 1 and rig.store.run(summary.run_id).status is RunStatus.interrupted

    resumed = rig.runner(plan()).resume(summary.run_id)
    assert resumed.iterations == 3 and resumed.status is RunStatus.finished


def test_flags_given_with_resume_apply_and_are_recorded(rig: Rig) -> None:
    first = rig.runner(plan()).start(RunConfig(budget=1, min_gain=1.02))
    resumed = rig.runner(plan()).resume(first.run_id, ResumeOverrides(budget=2, min_gain=2.5))

    run = rig.store.run(first.run_id)
    assert run.budget == 2 and run.config["min_gain"] == 2.5 and resumed.iterations == 2
    # 40 ns against a 50 ns champion is 1.25x: below the new threshold.
    assert rig.outcomes(first.run_id)[1] == ("rejected", "no_gain")
    refuse_identity_changes(run, problem="rmsnorm", seed=0, machine=None)  # same: fine
    with pytest.raises(UsageError, match="started with --seed 0; a resumed run keeps it"):
        refuse_identity_changes(run, seed=3)


def test_the_context_sees_earlier_attempts_and_tried_hashes(rig: Rig) -> None:
    proposer = plan()
    rig.runner(proposer).start(RunConfig(budget=3))
    third = proposer.seen[-1]
    assert [a.number for a in third.recent] == [1, 2]
    assert [a.status for a in third.recent] == [IterationStatus.accepted] * 2
    assert len(third.tried_hashes) == 3  # baseline and the two accepted candidates
    assert third.knob_stats[("COLS_PER_TILE", "2048")].accepted == 1
