"""Opening a Knight database: engine, SQLite settings, sessions, and schema maintenance."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from knight.errors import KnightError, NotFoundError, UsageError
from knight.store.migrate import (
    BUSY_TIMEOUT_MS,
    RUN_LOCK,
    check_revision,
    current_revision,
    head_revision,
    sqlite_file,
    upgrade_to_head,
)


@dataclass(frozen=True)
class SchemaUpgrade:
    """What opening for writing did to an older schema: revisions and the backup copy made."""

    before: str | None
    after: str
    backup: Path | None  # None for a new database or a non-SQLite backend

    @property
    def changed(self) -> bool:
        """Whether the schema was migrated (a brand-new database is created, not migrated)."""
        return self.before is not None and self.before != self.after


def database_url(url_or_path: str) -> URL:
    """Parse a SQLAlchemy URL, or turn a bare file path into a SQLite URL."""
    if "://" not in url_or_path:
        # URL.create rather than f"sqlite:///{path}": no escaping trouble with '?', '#' or '%'.
        return URL.create("sqlite", database=str(Path(url_or_path).expanduser()))
    try:
        return make_url(url_or_path)
    except ArgumentError as error:
        raise UsageError(f"not a database URL: {url_or_path!r} ({error})") from error


def _set_sqlite_readonly_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Read-only connections only wait for writers; they change no setting of the file."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def _set_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """Configure every new SQLite connection (the settings are per connection)."""
    # A cursor plus commit works on Python 3.11; the `autocommit` attribute needs 3.12.
    cursor = dbapi_connection.cursor()
    try:
        # The timeout first: switching to WAL may have to wait for another process.
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # WAL lets `knight history` read while a run writes.
        _switch_to_wal(cursor)
    finally:
        cursor.close()
    dbapi_connection.commit()


def _switch_to_wal(cursor: sqlite3.Cursor) -> None:
    """Put the file in WAL mode. SQLite answers "database is locked" at once, without waiting
    out the busy timeout, while another connection is switching the same new file: two commands
    opening a new database together (a server and its first run) then both need the retry."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def _readonly_url(url: URL) -> URL:
    """The same SQLite file opened through a read-only URI (no write can reach the file)."""
    path = sqlite_file(url)
    if path is None:
        return url
    # Percent-escape what a URI path cannot hold verbatim.
    quoted = str(path.resolve()).replace("%", "%25").replace("?", "%3f").replace("#", "%23")
    return URL.create("sqlite", database=f"file:{quoted}", query={"mode": "ro", "uri": "true"})


def _create_engine(url: URL, where: str, readonly: bool = False) -> Engine:
    """An engine for `url`, with Knight's SQLite settings when it is SQLite."""
    options: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite" and sqlite_file(url) is None:
        # Each connection to :memory: is a separate database: share one connection instead.
        options = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
    try:
        engine = create_engine(_readonly_url(url) if readonly else url, **options)
    except ImportError as error:
        raise KnightError(f"cannot open {where}: database driver missing ({error})") from error
    if url.get_backend_name() == "sqlite":
        pragmas = _set_sqlite_readonly_pragmas if readonly else _set_sqlite_pragmas
        event.listen(engine, "connect", pragmas)
    return engine


class Database:
    """An open Knight database: the engine, a session factory and schema maintenance."""

    def __init__(self, engine: Engine, where: str, path: Path | None = None) -> None:
        """Wrap `engine`; `where` names the database in messages (path or password-free URL);
        `path` is the SQLite file, if it is one."""
        self.engine = engine
        self.where = where
        self.path = path
        # Objects stay readable after the session commits (the CLI prints them afterwards).
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"Database({self.where!r})"

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed when the block ends, rolled back on error.
        A lost connection (a database server restarting) is one KnightError line."""
        try:
            with self._sessions.begin() as session:
                yield session
        except OperationalError as error:
            raise KnightError(f"database {self.where} failed: {error.orig}") from error

    def revision(self) -> str | None:
        """The schema revision recorded in the database (None for an empty database)."""
        with self.engine.connect() as connection:
            return current_revision(connection)

    def upgrade(self) -> tuple[str | None, str]:
        """Bring the schema to this Knight's head revision; return (before, after)."""
        return upgrade_to_head(self.engine, self.where)

    def backup(self, label: str) -> Path | None:
        """Copy a SQLite file next to itself (`<file>.<label>.bak`, numbered if taken) with
        SQLite's online backup; None for other backends, which have their own tools."""
        if self.path is None:
            return None
        target = self.path.with_name(f"{self.path.name}.{label}.bak")
        n = 1
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.{label}.{n}.bak")
        raw = self.engine.raw_connection()
        try:
            with closing(sqlite3.connect(target)) as copy:
                raw.driver_connection.backup(copy)  # type: ignore[union-attr]
        finally:
            raw.close()
        return target

    def upgrade_with_backup(self) -> SchemaUpgrade:
        """Upgrade to head; an existing older schema is first copied aside with `backup`."""
        before = self.revision()
        head = head_revision()
        backup = None
        if before is not None and before != head:
            backup = self.backup(f"before-{head}")
        before, after = self.upgrade()
        return SchemaUpgrade(before, after, backup)

    def integrity_check(self) -> str:
        """ "ok" when the database is sound: SQLite's `PRAGMA integrity_check` on a SQLite file,
        then, on every backend, the run history's own invariants (`history_problems`)."""
        with self.engine.connect() as connection:
            if self.engine.dialect.name == "sqlite":
                rows = connection.exec_driver_sql("PRAGMA integrity_check").scalars().all()
                verdict = "\n".join(str(row) for row in rows)
                if verdict != "ok":
                    return verdict
            problems = history_problems(connection)
        return "\n".join(problems) if problems else "ok"

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


# Each query finds rows that break an invariant of the run history (see integrity_check).
_HISTORY_INVARIANTS = {
    "iterations whose parent iteration is not an earlier accepted iteration of the same run "
    "that produced the parent kernel": """
        SELECT i.run_id, i.number FROM iterations i
        WHERE i.parent_iteration IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM iterations p
            WHERE p.run_id = i.run_id AND p.number = i.parent_iteration
              AND p.number < i.number AND p.status = 'accepted'
              AND p.candidate_hash = i.parent_hash)""",
    "runs whose champion is neither the baseline nor one of their accepted candidates": """
        SELECT r.id, r.champion_hash FROM runs r
        WHERE r.champion_hash IS NOT NULL AND r.champion_hash <> r.baseline_hash
          AND NOT EXISTS (
            SELECT 1 FROM iterations i
            WHERE i.run_id = r.id AND i.status = 'accepted'
              AND i.candidate_hash = r.champion_hash)""",
}


def history_problems(connection: Connection) -> list[str]:
    """Broken invariants of the run history (empty when sound), one line each."""
    problems = []
    for what, query in _HISTORY_INVARIANTS.items():
        rows = connection.exec_driver_sql(query).fetchall()
        if rows:
            problems.append(f"{len(rows)} {what} (first: {tuple(rows[0])})")
    return problems


@contextmanager
def run_lock(database: Database, run_id: int) -> Iterator[None]:
    """Hold run `run_id` for this process: on PostgreSQL a session advisory lock, refused with a
    KnightError while another process holds it; on SQLite nothing (one writer at a time anyway)."""
    if database.engine.dialect.name != "postgresql":
        yield
        return
    with database.engine.connect() as connection:
        query = f"SELECT pg_try_advisory_lock({RUN_LOCK}, {int(run_id)})"
        if not connection.exec_driver_sql(query).scalar():
            raise KnightError(
                f"run {run_id} is being run by another process on {database.where}; "
                "wait for it to stop, then resume"
            )
        connection.commit()
        try:
            yield
        finally:
            connection.exec_driver_sql(f"SELECT pg_advisory_unlock({RUN_LOCK}, {int(run_id)})")
            connection.commit()


def open_database(
    url_or_path: str, *, create: bool = True, migrate: bool = True, readonly: bool = False
) -> Database:
    """Open (and with `create`, create) a Knight database, upgrading its schema with `migrate`.

    A bare path means SQLite. Without `migrate` the schema is left as found (for `knight db
    upgrade` and `knight run`, which back up first); a schema newer than this Knight always
    fails. `readonly` never writes (a SQLite file is opened read-only) and refuses an
    out-of-date schema with a hint to run `knight db upgrade`.
    """
    url = database_url(url_or_path)
    path = sqlite_file(url)
    where = str(path) if path is not None else url.render_as_string(hide_password=True)
    if path is not None and not path.exists():
        if not create or readonly:
            raise NotFoundError(f"database not found: {path}")
        if not path.parent.is_dir():
            raise NotFoundError(f"cannot create database {path}: no directory {path.parent}")
    database = Database(_create_engine(url, where, readonly), where, path)
    try:
        if readonly:
            _check_current(database, url_or_path)
        elif migrate:
            database.upgrade()
        else:
            with database.engine.connect() as connection:
                check_revision(connection, where)
    except DatabaseError as error:
        database.close()
        raise KnightError(f"cannot open database {where}: {error.orig}") from error
    except BaseException:
        database.close()
        raise
    return database


def _check_current(database: Database, given: str) -> None:
    """Refuse (with the command that fixes it) a schema older than this Knight's."""
    with database.engine.connect() as connection:
        revision = check_revision(connection, database.where)
    head = head_revision()
    if revision == head:
        return
    state = "has no Knight schema yet" if revision is None else f"is at schema revision {revision}"
    raise KnightError(
        f"{database.where} {state}, this Knight reads {head}: run 'knight db upgrade --db {given}' "
        "(it keeps a backup copy); read-only commands never change the database"
    )
