"""The typed run-history API, read-only opening, and backups before schema upgrades."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from cli_runner import knight, knight_here
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from knight.errors import KnightError, NotFoundError
from knight.failure import Category, Failure, IterationStatus, RunStatus
from knight.proposal import Edit, ModelCall, Turn
from knight.source import source_hash
from knight.store import (
    IterationRecord,
    LessonRecord,
    RunSpec,
    RunStore,
    cached_evaluation,
    head_revision,
    open_store,
    save_evaluation,
)
from knight.store.migrate import alembic_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "knight.db.example"  # the shipped example, at the current schema
OLD = ROOT / "tests" / "data" / "knight-0001.sqlite"  # written by schema 0001 (4 iterations)
BASELINE = "X = 1\n"


def spec(**more: object) -> RunSpec:
    values = dict(
        problem_id="rmsnorm",
        problem_hash="p",
        machine="trn2",
        machine_hash="m",
        knight_version="test",
        proposer="test",
        seed=0,
        budget=5,
        baseline_source=BASELINE,
        baseline_score_ns=100.0,
    )
    return RunSpec(**(values | more))


def record(number: int, status: IterationStatus, **more: object) -> IterationRecord:
    values = dict(
        number=number,
        proposer="test",
        parent_hash=source_hash(BASELINE),
        parent_score_ns=100.0,
        hypothesis=f"idea {number}",
        started_at=datetime(2026, 1, 1, tzinfo=UTC),
        wall_s=0.5,
        status=status,
    )
    return IterationRecord(**(values | more))


@pytest.fixture
def store(store_url: str) -> RunStore:
    """A fresh store: in-memory SQLite, and a database on a real PostgreSQL server."""
    with open_store(store_url, "write", create=True) as opened:
        yield opened


def test_a_recorded_iteration_comes_back_typed(store: RunStore) -> None:
    run = store.start_run(spec())
    assert run.status is RunStatus.running and run.champion_hash == run.baseline_hash
    failure = Failure(
        category="patch_no_match", message="not found", edit_index=0, file="kernel.py"
    )
    store.record_iteration(
        run.id,
        record(
            1,
            IterationStatus.failed,
            failure=failure,
            edits=[Edit(file="kernel.py", search="X = 1", replace="X = 2")],
            skills_cited=["patching"],
            skills_read=["patching"],
            transcript=[Turn(role="assistant", kind="text", content="[bold]kept[/bold]")],
            llm_calls=[ModelCall(model="m", cost_usd=0.25)],
            lessons=[LessonRecord(kind="pitfall", text="idea 1 -> patch_no_match")],
        ),
    )
    store.record_iteration(
        run.id, record(2, IterationStatus.accepted, candidate_source="X = 2\n", score_ns=50.0)
    )

    detail = store.iteration(run.id, 1)
    assert detail.failure == failure and detail.failure.stage == "patch"
    assert detail.category is Category.patch_no_match and detail.message == "not found"
    assert detail.transcript[0].content == "[bold]kept[/bold]"
    assert detail.llm_calls[0].cost_usd == 0.25
    progress = store.progress(run.id)
    assert (progress.iterations, progress.accepted, progress.cost_usd) == (2, 1, 0.25)
    assert progress.best_score_ns == 50.0 and progress.speedup == 2.0
    assert store.history(run.id, status=IterationStatus.accepted)[0].speedup_vs_baseline == 2.0
    assert store.skill_usage() == {"patching": {"retrieved": 1, "cited": 1, "failed": 1}}
    assert store.problem_history("rmsnorm").lessons == ["[pitfall] idea 1 -> patch_no_match"]
    later = store.problem_history("rmsnorm", after_id=store.problem_history("rmsnorm").last_id)
    assert later.attempts == []  # incremental: nothing new since the last call


def test_an_iteration_is_recorded_whole_or_not_at_all(store: RunStore) -> None:
    run = store.start_run(spec())
    store.record_iteration(run.id, record(1, IterationStatus.rejected))
    with pytest.raises(IntegrityError):  # the unique (run, number) constraint
        store.record_iteration(
            run.id, record(1, IterationStatus.accepted, candidate_source="X = 3\n", score_ns=1.0)
        )
    assert store.progress(run.id).best_score_ns == 100.0  # the champion did not move
    assert len(store.sources(["x"])) == 0


def test_outage_calls_belong_to_the_run_but_to_no_iteration(store: RunStore) -> None:
    run = store.start_run(spec())
    failed = ModelCall(model="m", status="error", error="Anthropic API 529 overloaded_error")
    store.record_proposer_calls(run.id, [failed, failed])
    progress = store.progress(run.id)
    assert progress.iterations == 0 and progress.proposer_outage_calls == 2


def test_unknown_runs_and_iterations_are_not_found(store: RunStore) -> None:
    with pytest.raises(KnightError, match="no runs"):
        store.resolve_run_id(None)
    run = store.start_run(spec())
    assert store.resolve_run_id(None) == run.id
    with pytest.raises(NotFoundError, match="run 9"):
        store.run(9)
    with pytest.raises(NotFoundError, match="no iteration 3"):
        store.iteration(run.id, 3)


# ----------------------------------------------------------------------------- schema versions


def _digest(path: Path) -> bytes:
    return path.read_bytes()


def test_reading_an_old_database_changes_nothing_and_names_the_fix(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    shutil.copy(OLD, old)
    before = _digest(old)
    with pytest.raises(KnightError, match=r"knight db upgrade --db .*old\.db"):
        open_store(str(old), "read")
    assert _digest(old) == before
    with pytest.raises(NotFoundError):
        open_store(str(tmp_path / "missing.db"), "read")
    assert not (tmp_path / "missing.db").exists()


def test_opening_for_writing_backs_up_then_upgrades(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    shutil.copy(OLD, old)
    with open_store(str(old), "write") as store:
        upgrade = store.schema_upgrade
        assert upgrade is not None and upgrade.changed
        assert (upgrade.before, upgrade.after) == ("0001", head_revision())
        assert upgrade.backup == tmp_path / f"old.db.before-{head_revision()}.bak"
        assert len(store.history(1)) == 4
    with sqlite3.connect(upgrade.backup) as backup:
        assert backup.execute("select version_num from alembic_version").fetchone() == ("0001",)
        assert backup.execute("select count(*) from iterations").fetchone() == (4,)
    with open_store(str(old), "read") as store:  # now current: reading works
        assert [r.number for r in store.history(1)] == [1, 2, 3, 4]


def test_revision_0004_drops_the_never_written_correct_column(
    store_url: str, tmp_path: Path
) -> None:
    """Nothing wrote evaluations.correct (a cached run is stored before the judge compares it with
    the baseline); 0004 drops it and keeps every cached run and the cache's first-write-wins key."""
    url = str(tmp_path / "k.db") if store_url == ":memory:" else store_url
    engine = create_engine(url if "://" in url else f"sqlite:///{url}")
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), "0003")
        connection.execute(
            text(
                "INSERT INTO evaluations (candidate_hash, harness, workload, seed, status, "
                "latency_ns, correct, report, created_at) "
                "VALUES ('c', 'h', 'w', 1, 'ok', 5.0, NULL, '{}', CURRENT_TIMESTAMP)"
            )
        )
    engine.dispose()
    with open_store(url, "write") as store:
        assert store.schema_upgrade is not None and store.schema_upgrade.before == "0003"
        columns = {c["name"] for c in inspect(store.db.engine).get_columns("evaluations")}
        assert "correct" not in columns and {"latency_ns", "outputs_digest"} <= columns
        with store.db.session() as session:
            save_evaluation(session, "c", "h", "w", 1, status="failed", report={"n": 2})
            kept = cached_evaluation(session, "c", "h", "w", 1)
            assert kept is not None and (kept.status, kept.latency_ns) == ("ok", 5.0)


def test_knight_history_on_the_shipped_example_writes_nothing(tmp_path: Path) -> None:
    before = _digest(EXAMPLE)
    res = knight_here("history", "--db", str(EXAMPLE), cwd=tmp_path)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert _digest(EXAMPLE) == before
    if (ROOT / ".git").exists():
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "knight.db.example*"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        assert status.stdout == ""


def test_knight_history_on_an_old_database_names_the_upgrade(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    shutil.copy(OLD, old)
    before = _digest(old)
    res = knight_here("history", "--db", str(old), cwd=tmp_path)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "run 'knight db upgrade --db" in res.stderr and len(res.stderr.splitlines()) == 1
    assert _digest(old) == before


def test_knight_run_on_an_old_database_leaves_a_backup(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    shutil.copy(OLD, old)
    script = tmp_path / "one.jsonl"
    line = "COLS_PER_TILE = {}  # columns per normalise / multiply / store step"
    edit = {"file": "kernel.py", "search": line.format(512), "replace": line.format(2048)}
    script.write_text(json.dumps({"hypothesis": "wider tiles", "edits": [edit]}) + "\n")
    res = knight(
        "run", "--budget", "1", "--problem", "rmsnorm", "--proposer", "scripted",
        "--script", str(script), "--db", str(old), "--json", cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    backup = tmp_path / f"old.db.before-{head_revision()}.bak"
    assert f"upgraded {old} from schema 0001 to {head_revision()}; backup at {backup}" in res.stderr
    with sqlite3.connect(backup) as db:
        assert db.execute("select count(*) from runs").fetchone() == (1,)
    assert json.loads(res.stdout)["run_id"] == 2


def test_history_fits_100_columns_and_prints_proposer_text_verbatim(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    with open_store(str(db), "write", create=True) as store:
        run = store.start_run(spec())
        long = "Use [bold]tiles[/bold] of " + "very " * 40 + "wide columns"
        store.record_iteration(
            run.id,
            record(
                1,
                IterationStatus.rejected,
                hypothesis=long,
                failure=Failure(category="no_gain", message="1.00x"),
            ),
        )
    table = knight_here("history", "--db", str(db), cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert "Use [bold]tiles[/bold] of very" in table.stdout and lines[-1].endswith("-")
    wide = knight_here("history", "--db", str(db), "--wide", cwd=tmp_path).stdout
    assert long in wide
