"""Scaling out: parallel rounds, beam search and its lineage tree, resuming a killed round, and
a shared PostgreSQL store written by two concurrent runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from cli_runner import knight_here
from sqlalchemy import create_engine, text

from knight.agent.beam import Beam
from knight.agent.config import ResumeOverrides, RunConfig
from knight.agent.context import Champion
from knight.agent.loop import Runner
from knight.agent.replay import replay
from knight.errors import KnightError
from knight.evaluation import EvalReport, LocalEvaluator, MemoryCache
from knight.evaluation.fake import FakeEvaluator, FakeOutcome
from knight.failure import IterationStatus
from knight.problems import Problem, load_problem
from knight.problems.spec import load_problem_dir
from knight.proposal import Edit, Proposal
from knight.proposers import ProposalContext, ProposalResult
from knight.store import (
    IterationRecord,
    RunSpec,
    RunStore,
    head_revision,
    open_database,
    open_store,
)
from knight.store.migrate import alembic_config

ROOT = Path(__file__).resolve().parents[1]
PROBLEM = load_problem("rmsnorm")
LOAD = 'LOAD_ENGINE = "{}"  # engine that triggers the DMAs (loads and stores)'
COLS = "COLS_PER_TILE = {}  # columns per normalise / multiply / store step"
RULES = {
    LOAD.format("scalar"): FakeOutcome(score_ns=40.0),
    COLS.format(2048): FakeOutcome(score_ns=50.0),
    COLS.format(256): FakeOutcome(score_ns=150.0),
}


def change(template: str, old: object, new: object) -> ProposalResult:
    edit = Edit(file="kernel.py", search=template.format(old), replace=template.format(new))
    return ProposalResult(Proposal(hypothesis=f"set {new}", edits=[edit]))


class ByNumber:
    """Proposals by iteration number; safe to share between the calls of a round."""

    name = "test"

    def __init__(self, proposals: dict[int, ProposalResult]) -> None:
        self.proposals = proposals
        self.seen: dict[int, ProposalContext] = {}

    def propose(self, ctx: ProposalContext) -> ProposalResult:
        self.seen[ctx.iteration] = ctx
        return self.proposals[ctx.iteration]

    def fix(self, ctx: ProposalContext, failure: object) -> None:
        return None


# The loop tests judge with a FakeEvaluator keyed on knob lines: a synthetic baseline keeps them
# independent of the real kernel's text.
BASELINE = f"""\
{LOAD.format("sync")}
{COLS.format(512)}
TUNABLES = {{"LOAD_ENGINE": ["sync", "scalar"], "COLS_PER_TILE": [256, 512, 1024, 2048]}}


def rmsnorm(x, gamma, out):
    pass
"""


@pytest.fixture(scope="module")
def problem(tmp_path_factory: pytest.TempPathFactory) -> Problem:
    root = tmp_path_factory.mktemp("problem") / "rmsnorm"
    shutil.copytree(PROBLEM.root, root)
    (root / PROBLEM.spec.baseline).write_text(BASELINE)
    return load_problem_dir(root)


def runner(store: RunStore, problem: Problem, proposer: ByNumber) -> Runner:
    evaluator = FakeEvaluator(100.0, dict(RULES))
    return Runner(store, problem, evaluator, proposer, proposer_factory=lambda: proposer)


@pytest.fixture
def store(store_url: str):
    with open_store(store_url, "write", create=True) as opened:
        yield opened


def test_a_parallel_round_records_every_candidate_with_its_own_focus(
    store: RunStore, problem: Problem
) -> None:
    proposer = ByNumber(
        {
            1: change(LOAD, "sync", "scalar"),
            2: change(COLS, 512, 2048),
            3: change(COLS, 512, 256),
            4: change(COLS, 512, 2048),
            5: change(COLS, 512, 256),
            6: change(COLS, 512, 1024),
        }
    )
    summary = runner(store, problem, proposer).start(RunConfig(budget=6, parallel=3))
    rows = store.history(summary.run_id)
    assert [r.number for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r.status for r in rows[:3]] == [IterationStatus.accepted] * 2 + [
        IterationStatus.rejected
    ]
    # Round 1 starts from the baseline; with a beam of one, round 2 from the champion (#1, 40 ns).
    assert [r.parent_iteration for r in rows] == [None] * 3 + [1] * 3
    assert summary.best_score_ns == 40.0 and summary.iterations == 6
    for first in (1, 4):
        focuses = [proposer.seen[n].focus for n in range(first, first + 3)]
        assert all(focuses) and len(set(focuses)) == 3
        assert [r.focus for r in rows[first - 1 : first + 2]] == focuses
    assert proposer.seen[1].focus.startswith("the bottleneck")


def test_the_beam_gives_each_call_a_parent_and_the_lineage_is_a_tree(
    store: RunStore, problem: Problem
) -> None:
    proposer = ByNumber(
        {
            1: change(LOAD, "sync", "scalar"),  # 40 ns
            2: change(COLS, 512, 2048),  # 50 ns
            3: change(COLS, 512, 256),  # from #1: still 40 ns (no gain)
            4: change(LOAD, "sync", "scalar"),  # from #2: 40 ns, 1.25x its parent
        }
    )
    summary = runner(store, problem, proposer).start(RunConfig(budget=4, parallel=2, beam=2))
    rows = store.history(summary.run_id)
    assert [r.parent_iteration for r in rows] == [None, None, 1, 2]
    assert [r.status.value for r in rows] == ["accepted", "accepted", "rejected", "accepted"]
    assert proposer.seen[4].champion_hash == rows[1].candidate_hash  # #2's kernel
    assert [it.number for it in store.lineage(summary.run_id, 4)] == [2, 4]
    assert [it.number for it in store.lineage(summary.run_id)] == [1]  # the champion, first to 40
    assert store.beam(summary.run_id, 2)[0] == (rows[0].candidate_hash, 1)


def test_resume_fills_exactly_the_numbers_a_killed_round_left_empty(
    store: RunStore, problem: Problem
) -> None:
    proposer = ByNumber({n: change(COLS, 512, 256) for n in range(1, 7)})
    proposer.proposals[1] = change(LOAD, "sync", "scalar")
    first = runner(store, problem, proposer).start(RunConfig(budget=3, parallel=3))
    # A round of 4, 5, 6 killed after only #5 was stored.
    store.record_iteration(
        first.run_id,
        IterationRecord(
            number=5,
            proposer="test",
            parent_hash=store.run(first.run_id).champion_hash,
            parent_score_ns=40.0,
            parent_iteration=1,
            status=IterationStatus.rejected,
            hypothesis="finished before the kill",
            started_at=datetime(2026, 1, 1, tzinfo=UTC),
            wall_s=1.0,
        ),
    )
    resumed = runner(store, problem, proposer).resume(first.run_id, ResumeOverrides(budget=6))
    rows = store.history(first.run_id)
    assert [r.number for r in rows] == [1, 2, 3, 4, 5, 6]
    assert resumed.iterations == 6
    assert [r.hypothesis for r in rows if r.number == 5] == ["finished before the kill"]


def _finished_before_the_kill(
    store: RunStore, run_id: int, number: int, kernel: str | None, score: float | None
) -> None:
    """Record iteration `number` of a killed round (started from the baseline) as finished:
    accepted with `kernel` and `score`, or rejected when `kernel` is None."""
    run = store.run(run_id)
    store.record_iteration(
        run_id,
        IterationRecord(
            number=number,
            proposer="test",
            parent_hash=run.baseline_hash,
            parent_score_ns=100.0,
            candidate_source=kernel,
            score_ns=score,
            status=IterationStatus.accepted if kernel else IterationStatus.rejected,
            hypothesis="finished before the kill",
            started_at=datetime(2026, 1, 1, tzinfo=UTC),
            wall_s=1.0,
        ),
    )


@pytest.mark.parametrize(
    ("width", "later_accepted", "parent_of_5"),
    [(1, True, 4), (2, True, 3), (1, False, None), (3, False, None)],
)
def test_a_refilled_number_draws_its_parent_from_the_kernels_recorded_before_it(
    store: RunStore, problem: Problem, width: int, later_accepted: bool, parent_of_5: int | None
) -> None:
    # A round of 2, 3, 4 (all from the baseline) killed while #2 was in flight, after #3 and #4
    # finished (accepted: 50 ns and 40 ns, the new champion; or both rejected).
    proposer = ByNumber({n: change(COLS, 512, 1024) for n in range(1, 6)})
    first = runner(store, problem, proposer).start(RunConfig(budget=1, parallel=3, beam=width))
    fast = {3: (COLS, 512, 2048, 50.0), 4: (LOAD, "sync", "scalar", 40.0)}
    for number, (template, old, new, score) in fast.items():
        kernel = BASELINE.replace(template.format(old), template.format(new))
        if later_accepted:
            _finished_before_the_kill(store, first.run_id, number, kernel, score)
        else:
            _finished_before_the_kill(store, first.run_id, number, None, None)
    # Resumed with a round of two: the gap #2, and the new #5.
    resumed = runner(store, problem, proposer).resume(
        first.run_id, ResumeOverrides(budget=5, parallel=2)
    )
    rows = {r.number: r for r in store.history(first.run_id)}
    assert sorted(rows) == [1, 2, 3, 4, 5] and resumed.iterations == 5
    # #2 starts from the baseline: the kernels of #3 and #4 came after it.
    assert rows[2].parent_iteration is None
    assert proposer.seen[2].champion_hash == store.run(first.run_id).baseline_hash
    # #5 (call 1 of the round) from the live beam: the champion #4, or with a beam of 2, #3.
    assert rows[5].parent_iteration == parent_of_5
    assert store.db.integrity_check() == "ok"


def test_beam_keeps_the_k_best_distinct_kernels() -> None:
    def kernel(name: str, score: float, number: int | None) -> Champion:
        report = EvalReport(candidate_hash=name, problem="p", harness="h", machine="m", status="ok")
        return Champion(name, name, score, report, number)

    beam = Beam(2, [kernel("base", 100.0, None)])
    assert beam.offer(kernel("a", 50.0, 1)) and beam.offer(kernel("b", 70.0, 2))
    assert not beam.offer(kernel("a", 50.0, 1))  # already in
    assert not beam.offer(kernel("c", 90.0, 3))  # worse than both
    assert [m.hash for m in beam.members] == ["a", "b"]
    assert [(p.hash, rank) for p, rank in beam.parents(3)] == [("a", 0), ("b", 0), ("a", 1)]


def _knight(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("ANTHROPIC_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "knight.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_beam_3_parallel_3_offline_run_records_a_tree_whose_every_node_replays(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "knight.db")
    run = _knight(
        "run", "-p", "rmsnorm", "--proposer", "offline", "--budget", "6", "--parallel", "3",
        "--beam", "3", "--db", db, "--json", cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.splitlines()[-1])
    with open_store(db) as store:
        rows = store.history(summary["run_id"])
        accepted = [r for r in rows if r.status is IterationStatus.accepted]
        assert len(rows) == 6 and len(accepted) >= 2
        # A tree: round 2 draws from more than one parent.
        assert len({r.parent_iteration for r in rows[3:]}) >= 2
        # In-process judging gives the same bits as worker processes, without their start-up.
        with LocalEvaluator(isolate=False, cache=MemoryCache()) as evaluator:
            for node in accepted:
                result = replay(store, PROBLEM, evaluator, summary["run_id"], iteration=node.number)
                assert result.all_match, result.to_dict()
                assert result.final_hash == node.candidate_hash
                assert result.steps[-1].iteration == node.number
        assert open_database(db).integrity_check() == "ok"
    shown = knight_here("show", str(rows[3].number), "--db", db, cwd=tmp_path)
    assert f"parent: iteration {rows[3].parent_iteration}" in shown.stdout or (
        rows[3].parent_iteration is None and "parent: the baseline" in shown.stdout
    )
    table = knight_here("history", "--db", db, cwd=tmp_path).stdout.splitlines()
    assert table[1].split()[:2] == ["#", "from"] and table[2].split()[1] == "base"


# ----------------------------------------------------------------------------- PostgreSQL


def test_two_concurrent_runs_on_one_postgresql_database(postgres_server, tmp_path: Path) -> None:
    url = postgres_server.create_database()
    argv = ["run", "-p", "rmsnorm", "--proposer", "offline", "--budget", "3", "--parallel", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("ANTHROPIC_API_KEY", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "knight.cli", *argv, "--seed", str(seed), "--db", url, "--json"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    run_ids = sorted(json.loads(out.splitlines()[-1])["run_id"] for out, _ in outputs)
    assert run_ids == [1, 2]
    with open_store(url) as store:
        assert store.db.integrity_check() == "ok"
        for run_id in run_ids:
            rows = store.history(run_id)
            assert [r.number for r in rows] == [1, 2, 3]
            assert all(r.run_id == run_id for r in rows)
            assert store.run(run_id).status.value == "finished"


def test_migrations_run_on_postgresql_and_fill_the_parents_of_older_rows(postgres_server) -> None:
    url = postgres_server.create_database()
    engine = create_engine(url)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0002")
        connection.execute(
            text(
                "INSERT INTO runs (id, created_at, problem_id, problem_hash, machine, "
                "machine_hash, knight_version, proposer, seed, budget, status, baseline_hash, "
                "config, notes) VALUES (1, now(), 'p', 'p', 'trn2', 'm', '0', 'offline', 0, 3, "
                "'finished', 'b', '{}', '')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO candidates (hash, source, created_at) VALUES "
                "('b', 'x', now()), ('c1', 'y', now()), ('c2', 'z', now())"
            )
        )
        for number, parent, child in ((1, "b", "c1"), (2, "c1", "c2")):
            connection.execute(
                text(
                    "INSERT INTO iterations (run_id, number, parent_hash, candidate_hash, status,"
                    " hypothesis, rationale, tags, skills_cited, edits, patch_rungs, diff,"
                    " started_at, finished_at, wall_s, fix_rounds, proposer) VALUES (1, :n, :p,"
                    " :c, 'accepted', 'h', '', '[]', '[]', '[]', '[]', '', now(), now(), 1, 0,"
                    " 'offline')"
                ),
                {"n": number, "p": parent, "c": child},
            )
    engine.dispose()
    with open_store(url, "write") as store:
        assert store.schema_upgrade is not None
        assert (store.schema_upgrade.before, store.schema_upgrade.after) == (
            "0002",
            head_revision(),
        )
        assert [r.parent_iteration for r in store.history(1)] == [None, 1]
        assert [it.number for it in store.lineage(1, 2)] == [1, 2]


SLOW_AGENT = """
import os, runpy, sys, time
prompt = open(sys.argv[1], encoding="utf-8").read()
if "Iteration 2." in prompt and not os.path.exists({flag!r}):
    with open({flag!r} + ".pid", "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)  # still thinking when the run is killed
sys.argv = [{agent!r}, sys.argv[1], sys.argv[2]]
runpy.run_path({agent!r}, run_name="__main__")
"""


def _ends_within(pid: int, seconds: float) -> bool:
    """Whether process `pid` is gone (or a zombie awaiting its reaper) within `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


def test_kill_9_in_the_middle_of_a_round_then_resume_loses_and_duplicates_nothing(
    tmp_path: Path,
) -> None:
    db, flag = tmp_path / "knight.db", tmp_path / "resumed"
    agent = tmp_path / "agent.py"
    knob_agent = str(ROOT / "benchmarks" / "knob_agent.py")
    agent.write_text(SLOW_AGENT.format(flag=str(flag), agent=knob_agent))
    command = f"{sys.executable} {agent} {{prompt_file}} {{output_file}}"
    argv = [sys.executable, "-m", "knight.cli", "run", "-p", "rmsnorm", "--proposer", "command"]
    argv += ["--command", command, "--budget", "3", "--parallel", "3", "--db", str(db)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("ANTHROPIC_API_KEY", None)
    proc = subprocess.Popen(
        argv,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        numbers: set[int] = set()
        while numbers != {1, 3} and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            try:
                with open_store(str(db)) as store:
                    numbers = store.iteration_numbers(1) if store.list_runs() else set()
            except KnightError:  # not created yet, or its schema not yet written
                continue
        assert numbers == {1, 3}, "iterations 1 and 3 should finish while 2 is still proposed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # kill -9: the run and its workers
        proc.wait()
    # The agent runs in its own session, out of the group's reach: it must die with knight.
    agent_pid = int(Path(f"{flag}.pid").read_text())
    assert _ends_within(agent_pid, 10), "the agent outlived a kill -9 of knight run"
    with open_store(str(db)) as store:
        before = {r.number: r for r in store.history(1)}
        assert store.run(1).status.value == "running"  # nobody closed it
    flag.touch()
    resumed = _knight("run", "--db", str(db), "--resume", "1", "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    with open_store(str(db)) as store:
        rows = store.history(1)
        assert [r.number for r in rows] == [1, 2, 3]
        assert {n: store.history(1)[n - 1] for n in (1, 3)} == before  # kept as they were
        # The refilled #2 starts from a kernel recorded before it, never from #3's.
        assert rows[1].parent_iteration in (None, 1)
        assert store.db.integrity_check() == "ok"


def test_a_run_held_by_one_process_is_refused_to_another(postgres_server) -> None:
    url = postgres_server.create_database()
    with open_store(url, "write", create=True) as first, open_store(url, "write") as second:
        run = first.start_run(
            RunSpec(
                problem_id="rmsnorm", problem_hash="p", machine="trn2", machine_hash="m",
                knight_version="test", proposer="test", seed=0, budget=3,
                baseline_source=BASELINE, baseline_score_ns=100.0,
            )
        )  # fmt: skip
        with first.hold_run(run.id):
            with pytest.raises(KnightError, match="being run by another process"):
                with second.hold_run(run.id):
                    pass
        with second.hold_run(run.id):  # released when the first stopped
            pass
