"""Tests of knight.store: schema creation, SQLite settings, migrations and the loop's queries."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, func, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from knight.errors import KnightError, NotFoundError, UsageError
from knight.failure import IterationStatus
from knight.store import (
    Base,
    Candidate,
    Database,
    Evaluation,
    Iteration,
    LLMCall,
    Run,
    RunStore,
    cached_evaluation,
    database_url,
    get_or_create_candidate,
    head_revision,
    migrate,
    open_database,
    save_evaluation,
)
from knight.store.queries import get_run

BASELINE = "def kernel(x):\n    return x\n"


# --- helpers -------------------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """A fresh database in a temporary file."""
    database = open_database(str(tmp_path / "knight.db"))
    yield database
    database.close()


def add_run(session: Session, **fields: Any) -> Run:
    """Insert a run with plausible defaults."""
    values: dict[str, Any] = {
        "problem_id": "moe-decode",
        "problem_hash": "p" * 64,
        "machine": "trn2",
        "machine_hash": "m" * 64,
        "knight_version": "0.1.0",
        "proposer": "offline",
        "seed": 0,
        "budget": 10,
        "baseline_hash": hashlib.sha256(BASELINE.encode()).hexdigest(),
    }
    run = Run(**(values | fields))
    session.add(run)
    session.flush()
    return run


def next_number(session: Session, run_id: int) -> int:
    """The number the next iteration of `run_id` gets."""
    highest = session.scalar(select(func.max(Iteration.number)).where(Iteration.run_id == run_id))
    return (highest or 0) + 1


def add_iteration(session: Session, run: Run, status: str = "rejected", **fields: Any) -> Iteration:
    """Insert the next iteration of `run`, patching the baseline."""
    parent = get_or_create_candidate(session, BASELINE, run.id)
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "run_id": run.id,
        "number": next_number(session, run.id),
        "parent_hash": parent.hash,
        "status": status,
        "hypothesis": "unroll the expert loop",
        "started_at": now,
        "finished_at": now,
        "wall_s": 0.5,
        "proposer": "offline",
    }
    iteration = Iteration(**(values | fields))
    session.add(iteration)
    session.flush()
    return iteration


def sqlite_engine(path: Path) -> Engine:
    """A bare engine on `path`, without Knight's settings (as an older Knight or a tool would)."""
    return create_engine(f"sqlite:///{path}")


def migrate_with_alembic(path: Path, revision: str) -> None:
    """Build a database by running the migrations (not create_all) up to `revision`."""
    engine = sqlite_engine(path)
    with engine.begin() as connection:
        command.upgrade(migrate.alembic_config(connection), revision)
    engine.dispose()


def schema_snapshot(engine: Engine) -> dict[str, Any]:
    """Everything the inspector reports about every table, in a comparable form."""
    inspector = inspect(engine)
    snapshot: dict[str, Any] = {}
    for table in sorted(set(inspector.get_table_names()) - {"alembic_version"}):
        snapshot[table] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], c["default"])
                for c in inspector.get_columns(table)
            ],
            "pk": inspector.get_pk_constraint(table),
            "fks": sorted(
                (f["name"], f["constrained_columns"], f["referred_table"], f["referred_columns"])
                + (sorted(f["options"].items()),)
                for f in inspector.get_foreign_keys(table)
            ),
            "indexes": sorted(
                (i["name"], i["column_names"], i["unique"]) for i in inspector.get_indexes(table)
            ),
            "uniques": sorted(
                (u["name"], u["column_names"]) for u in inspector.get_unique_constraints(table)
            ),
            "checks": sorted(
                (c["name"], " ".join(c["sqltext"].split()))
                for c in inspector.get_check_constraints(table)
            ),
        }
    return snapshot


EXTRA_REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "9001"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade():
    # recreate="always" copies, drops and renames `runs`, as a real SQLite migration would.
    with op.batch_alter_table("runs", recreate="always") as batch:
        batch.add_column(sa.Column("extra", sa.Integer(), nullable=True))
    {tail}


def downgrade():
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("extra")
"""


@pytest.fixture
def newer_knight(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Make Knight's migrations a copy with an extra revision 9001 after the head (body tail as given)."""

    def install(tail: str = "pass") -> None:
        copy = tmp_path / "migrations"
        shutil.copytree(migrate.MIGRATIONS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
        (copy / "versions" / "9001_extra.py").write_text(
            EXTRA_REVISION.format(tail=tail, head=head_revision())
        )
        monkeypatch.setattr(migrate, "MIGRATIONS_DIR", copy)

    return install


# --- creation and settings -----------------------------------------------------------------------


def test_revisions_read_from_the_file_headers_are_alembics(newer_knight) -> None:
    """Opening a database reads the revision files' headers instead of importing Alembic; both
    must see the same head and revisions, also once a newer revision is installed."""
    for newer in (False, True):
        if newer:
            newer_knight()
        script = ScriptDirectory.from_config(migrate.alembic_config())
        assert head_revision() == script.get_current_head() == ("9001" if newer else "0004")
        assert migrate.known_revisions() == {s.revision for s in script.walk_revisions()}


def test_new_database_gets_every_table_and_is_stamped_at_head(db: Database) -> None:
    assert db.revision() == head_revision() == "0004"
    tables = set(inspect(db.engine).get_table_names())
    assert tables == set(Base.metadata.tables) | {"alembic_version"}


NEW_DATABASE_SNIPPET = """
import sys
from knight.store import open_database
open_database(sys.argv[1], create=True).close()
print(sorted(m for m in ("alembic", "mako", "pygments") if m in sys.modules))
"""


def test_a_new_database_is_stamped_as_alembic_would_without_loading_it(tmp_path: Path) -> None:
    """Every first run creates a database: Alembic (with Mako and Pygments) loads only to migrate
    an old one, and the version Knight records is the one Alembic reads."""
    path = tmp_path / "new.db"
    proc = subprocess.run(
        [sys.executable, "-c", NEW_DATABASE_SNIPPET, str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    with create_engine(f"sqlite:///{path}").connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == head_revision()


def test_a_reader_racing_the_creation_of_a_database_never_calls_it_foreign(
    tmp_path: Path,
) -> None:
    """`knight history` while a run creates the database: the creation commits between the
    reader's queries, and the reader still sees either no schema or the whole stamped one."""
    path = tmp_path / "new.db"
    reader = create_engine(f"sqlite:///{path}")
    created: list[str] = []

    @event.listens_for(reader, "after_cursor_execute")
    def _create_meanwhile(*_: Any) -> None:
        if not created:
            created.append("now")
            open_database(str(path)).close()  # another process's run, committed right now

    with reader.connect() as connection:
        assert migrate.check_revision(connection, str(path)) in (None, head_revision())
    assert created
    with reader.connect() as connection:
        assert migrate.check_revision(connection, str(path)) == head_revision()
    reader.dispose()


def test_bare_path_means_sqlite_and_urls_are_accepted(tmp_path: Path) -> None:
    assert database_url("runs/knight.db").render_as_string() == "sqlite:///runs/knight.db"
    with open_database(f"sqlite:///{tmp_path / 'by-url.db'}") as database:
        assert database.revision() == head_revision()
    assert (tmp_path / "by-url.db").exists()
    with open_database("sqlite://") as memory, memory.session() as session:
        add_run(session)
    with pytest.raises(UsageError):
        database_url("not a url://")


def test_pragmas_are_in_force_on_every_connection(db: Database) -> None:
    connections = [db.engine.connect() for _ in range(2)]  # two distinct pooled connections
    try:
        for connection in connections:
            pragma = connection.exec_driver_sql
            assert pragma("PRAGMA foreign_keys").scalar() == 1
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA busy_timeout").scalar() == 5000
    finally:
        for connection in connections:
            connection.close()


def test_foreign_key_violation_raises(db: Database) -> None:
    with pytest.raises(IntegrityError, match="FOREIGN KEY"), db.session() as session:
        session.add(LLMCall(run_id=999, model="claude-haiku-5-5", request={}))
    with db.session() as session:
        assert session.scalars(select(LLMCall)).all() == []


def test_check_constraint_rejects_an_unknown_status(db: Database) -> None:
    with pytest.raises(IntegrityError, match="CHECK"), db.session() as session:
        add_run(session, status="paused")


def test_deleting_a_run_deletes_its_iterations_but_keeps_candidates(db: Database) -> None:
    with db.session() as session:
        run = add_run(session)
        add_iteration(session, run)
    with db.session() as session:
        session.delete(session.get_one(Run, run.id))
    with db.session() as session:
        assert session.scalars(select(Iteration)).all() == []
        (candidate,) = session.scalars(select(Candidate)).all()
        assert candidate.first_run_id is None


# --- migrations ----------------------------------------------------------------------------------


def test_migrations_build_exactly_the_models_schema(tmp_path: Path) -> None:
    migrated_path = tmp_path / "migrated.db"
    migrate_with_alembic(migrated_path, "head")
    migrated = sqlite_engine(migrated_path)
    with migrated.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    # compare_metadata ignores CHECK constraints and some options: compare everything reflected.
    created_path = tmp_path / "created.db"
    created = sqlite_engine(created_path)
    Base.metadata.create_all(created)
    assert schema_snapshot(migrated) == schema_snapshot(created)
    migrated.dispose()
    created.dispose()


def test_database_migrated_to_0001_opens_at_head_and_is_usable(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    migrate_with_alembic(path, "0001")
    with open_database(str(path), create=False) as database:
        assert database.revision() == head_revision()
        with database.session() as session:
            run = add_run(session)
            add_iteration(session, run, status="accepted")
        assert database.integrity_check() == "ok"


def test_older_database_is_upgraded_and_keeps_its_rows(
    tmp_path: Path, newer_knight: Callable[..., None]
) -> None:
    path = tmp_path / "old.db"
    with open_database(str(path)) as old, old.session() as session:
        run = add_run(session)
        add_iteration(session, run, status="accepted")
    newer_knight()
    with open_database(str(path), migrate=False) as database:
        assert database.revision() == "0004"
        assert database.upgrade() == ("0004", "9001")
        assert database.upgrade() == ("9001", "9001")
    with open_database(str(path)) as database, database.engine.connect() as connection:
        assert [c["name"] for c in inspect(connection).get_columns("runs")][-1] == "extra"
        # The batch migration dropped and recreated `runs`: its iterations must survive.
        assert connection.execute(text("SELECT count(*) FROM iterations")).scalar() == 1
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_migration_opened_automatically(tmp_path: Path, newer_knight: Callable[..., None]) -> None:
    path = tmp_path / "old.db"
    migrate_with_alembic(path, "0001")
    newer_knight()
    with open_database(str(path)) as database:
        assert database.revision() == "9001"


def test_failed_migration_leaves_the_database_unchanged(
    tmp_path: Path, newer_knight: Callable[..., None]
) -> None:
    path = tmp_path / "old.db"
    migrate_with_alembic(path, "0001")
    newer_knight('raise RuntimeError("migration bug")')
    with pytest.raises(RuntimeError, match="migration bug"):
        open_database(str(path))
    engine = sqlite_engine(path)
    with engine.connect() as connection:
        assert "extra" not in [c["name"] for c in inspect(connection).get_columns("runs")]
        assert (
            connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"
        )
    engine.dispose()


def test_unknown_revision_raises(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    open_database(str(path)).close()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '0042_future'")
    for migrate_on_open in (True, False):
        with pytest.raises(KnightError, match="0042_future.*newer Knight"):
            open_database(str(path), migrate=migrate_on_open)


def test_tables_without_a_revision_are_not_a_knight_database(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE notes (body TEXT)")
    with pytest.raises(KnightError, match="not a Knight database"):
        open_database(str(path))


def test_a_file_that_is_not_sqlite_raises(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not a database file at all " * 100)
    with pytest.raises(KnightError, match="notes.txt"):
        open_database(str(path))


def test_create_false_on_a_missing_file_raises_not_found(tmp_path: Path) -> None:
    path = tmp_path / "missing.db"
    with pytest.raises(NotFoundError, match="missing.db"):
        open_database(str(path), create=False)
    assert not path.exists()
    with pytest.raises(NotFoundError, match="no directory"):
        open_database(str(tmp_path / "nowhere" / "knight.db"))


def test_concurrent_first_opens_create_the_schema_once(tmp_path: Path) -> None:
    """Four commands opening one new file at once, many times over: the race between their
    switches to WAL mode is rare per file."""
    for attempt in range(20):
        path = tmp_path / f"shared-{attempt}.db"
        errors: list[BaseException] = []

        def open_and_close(path: Path = path, errors: list[BaseException] = errors) -> None:
            try:
                open_database(str(path)).close()
            except BaseException as error:  # reported below, in the test's thread
                errors.append(error)

        threads = [threading.Thread(target=open_and_close) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [], f"attempt {attempt}"
        with open_database(str(path)) as database:
            assert database.revision() == head_revision()


# --- integrity -----------------------------------------------------------------------------------


def test_integrity_check_is_ok_and_reports_damage(db: Database, tmp_path: Path) -> None:
    with db.session() as session:
        for seed in range(200):
            add_run(session, seed=seed)
    assert db.integrity_check() == "ok"
    db.close()
    # Forget an index in the schema: its pages become unreachable, which the check reports.
    with sqlite3.connect(tmp_path / "knight.db") as connection:
        connection.execute("PRAGMA writable_schema=ON")
        connection.execute("DELETE FROM sqlite_master WHERE name = 'ix_runs_problem_id'")
    with open_database(str(tmp_path / "knight.db")) as damaged:
        assert "never used" in damaged.integrity_check()


# --- queries -------------------------------------------------------------------------------------


def test_evaluation_cache_insert_twice_keeps_the_first_row(db: Database) -> None:
    key = ("c" * 64, "knight-0.1.0/trn2", "decode-64", 7)
    with db.session() as session:
        assert cached_evaluation(session, *key) is None
        first = save_evaluation(session, *key, status="ok", report={"n": 1}, latency_ns=10.0)
        again = save_evaluation(session, *key, status="failed", report={"n": 2})
        assert again.id == first.id and again.report == {"n": 1}
    with db.session() as session:
        rows = session.scalars(select(Evaluation)).all()
        assert len(rows) == 1 and rows[0].latency_ns == 10.0
        assert cached_evaluation(session, *key) == rows[0]
        assert cached_evaluation(session, *key[:3], 8) is None


def test_iterations_are_numbered_from_one_within_each_run(db: Database) -> None:
    with db.session() as session:
        first, second = add_run(session), add_run(session)
        assert [add_iteration(session, first).number for _ in range(3)] == [1, 2, 3]
        assert add_iteration(session, second).number == 1
    with pytest.raises(IntegrityError, match="UNIQUE"), db.session() as session:
        add_iteration(session, first, number=2)
    with pytest.raises(IntegrityError, match="CHECK"), db.session() as session:
        add_iteration(session, second, number=0)


def test_candidates_are_addressed_by_the_sha256_of_their_source(db: Database) -> None:
    with db.session() as session:
        run = add_run(session)
        candidate = get_or_create_candidate(session, BASELINE, run.id)
        assert candidate.hash == hashlib.sha256(BASELINE.encode()).hexdigest()
    with db.session() as session:
        again = get_or_create_candidate(session, BASELINE, None)
        assert (again.hash, again.first_run_id) == (candidate.hash, run.id)
        assert len(session.scalars(select(Candidate)).all()) == 1


def test_history_filters_and_keeps_the_most_recent(db: Database) -> None:
    with db.session() as session:
        run, other = add_run(session), add_run(session)
        statuses = ["rejected", "accepted", "failed", "accepted", "rejected"]
        for status in statuses:
            add_iteration(session, run, status=status, category="no_gain")
        add_iteration(session, other, status="accepted")
    store = RunStore(db)
    assert [i.status.value for i in store.history(run.id)] == statuses
    accepted = store.history(run.id, status=IterationStatus.accepted)
    assert [i.number for i in accepted] == [2, 4]
    assert len(store.history(run.id, category="no_gain")) == 5
    assert store.history(other.id, category="no_gain") == []
    assert [i.number for i in store.history(run.id, limit=2)] == [4, 5]
    assert [i.number for i in store.accepted_chain(run.id)] == [2, 4]
    assert store.iteration(run.id, 3).status is IterationStatus.failed
    with pytest.raises(NotFoundError, match="no iteration 9"):
        store.iteration(run.id, 9)


def test_runs_are_listed_and_looked_up(db: Database) -> None:
    store = RunStore(db)
    assert store.list_runs() == []
    with pytest.raises(KnightError, match="no runs"):
        store.resolve_run_id(None)
    with db.session() as session:
        ids = [add_run(session, seed=seed).id for seed in range(3)]
    assert [run.id for run in store.list_runs()] == ids
    assert store.resolve_run_id(None) == ids[-1] and store.resolve_run_id(ids[0]) == ids[0]
    assert store.run(ids[0]).seed == 0
    with pytest.raises(NotFoundError, match="run 99"):
        store.run(99)


def test_session_rolls_back_when_the_block_raises(db: Database) -> None:
    with pytest.raises(ValueError), db.session() as session:
        add_run(session)
        raise ValueError("killed mid-iteration")
    assert RunStore(db).list_runs() == []


def test_objects_stay_readable_after_the_session_ends(db: Database) -> None:
    with db.session() as session:
        run = add_run(session)
    assert run.status == "running" and run.config == {} and run.notes == ""


def test_json_none_is_sql_null_and_values_round_trip(db: Database) -> None:
    edits = [{"file": "kernel.py", "search": "a", "replace": "b"}]
    failure = {"category": "patch_no_match", "message": "no match", "location": None}
    with db.session() as session:
        run = add_run(session)
        add_iteration(session, run, status="failed", edits=edits, failure=failure)
        add_iteration(session, run, failure=None)
    with db.session() as session:
        stored = session.scalars(select(Iteration).where(Iteration.failure.is_(None))).all()
        assert [i.number for i in stored] == [2]
        first = session.scalars(select(Iteration).filter_by(run_id=run.id, number=1)).one()
        assert (first.edits, first.failure, first.tags) == (edits, failure, [])


def test_timestamps_come_back_as_aware_utc(db: Database) -> None:
    started = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    in_tokyo = started.astimezone(timezone(timedelta(hours=9)))
    with db.session() as session:
        run = add_run(session)
        add_iteration(session, run, started_at=started, finished_at=in_tokyo)
    with db.session() as session:
        iteration = session.scalars(select(Iteration).filter_by(run_id=run.id, number=1)).one()
        assert iteration.started_at == started and iteration.started_at.tzinfo == UTC
        assert iteration.finished_at == started and iteration.finished_at.hour == 12
        assert get_run(session, run.id).created_at.tzinfo == UTC


def test_the_shipped_example_database_opens_after_an_upgrade(tmp_path: Path) -> None:
    """A database written by an older schema (0001, the former knight.db.example): a newer Knight
    upgrades and reads it."""
    example = Path(__file__).resolve().parent / "data" / "knight-0001.sqlite"
    copy = tmp_path / "example.db"
    shutil.copy(example, copy)
    with open_database(str(copy), migrate=False) as database:
        assert database.revision() == "0001"
    with open_database(str(copy), create=False) as database:
        assert database.revision() == head_revision()
        store = RunStore(database)
        rows = store.history(1)
        assert len(rows) == 4 and store.iteration(1, 1).transcript == []
        assert any(r.status is IterationStatus.accepted for r in rows)
        assert database.integrity_check() == "ok"
