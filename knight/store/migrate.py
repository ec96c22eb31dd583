"""Schema versions: the Alembic configuration, the current revision, and upgrading to head."""

from __future__ import annotations

import ast
import functools
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    URL,
    Column,
    Connection,
    Engine,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.pool import NullPool

from knight import __version__
from knight.errors import KnightError
from knight.store.models import Base

# A real directory, not a resource handle: Alembic imports env.py and the revisions from disk.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version"

if TYPE_CHECKING:
    from alembic.config import Config


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration built in code (no alembic.ini, no working-directory lookup)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    # env.py runs the migrations on this connection, inside the caller's transaction.
    config.attributes["connection"] = connection
    return config


# Alembic (and the Mako and Pygments it imports) is loaded only to migrate: every command opens
# the database, and checking that it is at head needs no more than the revision files' headers.


# CPython 3.11's ast.parse is not thread-safe (gh-106905: "AST constructor recursion depth
# mismatch"), and a server's threads open databases at once: parse once, one thread at a time.
_PARSE_LOCK = threading.Lock()


def _revision_graph() -> Mapping[str, str | None]:
    """Each shipped revision -> the revision it follows, read from the revision files' headers."""
    return _revision_headers(MIGRATIONS_DIR)


@functools.cache
def _revision_headers(migrations: Path) -> Mapping[str, str | None]:
    with _PARSE_LOCK:
        return MappingProxyType(_parse_revision_headers(migrations))


def _parse_revision_headers(migrations: Path) -> dict[str, str | None]:
    graph: dict[str, str | None] = {}
    for path in sorted((migrations / "versions").glob("*.py")):
        header: dict[str, Any] = {}
        for node in ast.parse(path.read_text(), str(path)).body:
            target = (
                node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
            )
            value = getattr(node, "value", None)
            if isinstance(target, ast.Name) and isinstance(value, ast.Constant):
                header[target.id] = value.value
        if isinstance(header.get("revision"), str):
            graph[header["revision"]] = header.get("down_revision")
    return graph


def head_revision() -> str:
    """The newest revision this Knight knows."""
    graph = _revision_graph()
    heads = set(graph) - set(graph.values())
    assert len(heads) == 1, f"knight/store/migrations/versions has heads {sorted(heads)}, not one"
    return heads.pop()


def known_revisions() -> set[str]:
    """Every revision this Knight can upgrade from."""
    return set(_revision_graph())


def _schema(connection: Connection) -> tuple[str | None, set[str]]:
    """The recorded revision and the other tables, from one read of the catalogue: a new database
    is created and stamped in one transaction, so one read sees all of it or none of it (two reads
    could straddle its commit and see tables without their revision)."""
    tables = set(inspect(connection).get_table_names())
    if VERSION_TABLE not in tables:
        return None, tables
    rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    if len(rows) > 1:
        raise KnightError(f"the database records {len(rows)} schema revisions; expected one")
    return (rows[0] if rows else None), tables - {VERSION_TABLE}


def current_revision(connection: Connection) -> str | None:
    """The revision recorded in the database, or None when it has none."""
    return _schema(connection)[0]


def check_revision(connection: Connection, where: str) -> str | None:
    """Return the database's revision; raise KnightError when this Knight cannot use it."""
    revision, tables = _schema(connection)
    if revision is None:
        if tables:
            raise KnightError(
                f"{where} has tables ({', '.join(sorted(tables))}) but no Knight schema "
                "revision: not a Knight database"
            )
    elif revision not in known_revisions():
        raise KnightError(
            f"{where} is at schema revision {revision!r}, unknown to Knight {__version__} "
            f"(newest known: {head_revision()!r}); it was written by a newer Knight: upgrade Knight"
        )
    return revision


BUSY_TIMEOUT_MS = 5000  # how long a connection waits for another writer's lock
# PostgreSQL advisory-lock keys (first of two int4 keys): schema migrations, and runs in progress.
MIGRATION_LOCK = 0x4B4E01
RUN_LOCK = 0x4B4E02


def sqlite_file(url: URL) -> Path | None:
    """The file of a SQLite URL, or None for other backends and in-memory databases."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def _is_sqlite_file(engine: Engine) -> bool:
    return sqlite_file(engine.url) is not None


def _locked_sqlite_engine(engine: Engine) -> Engine:
    """A one-off engine on the same SQLite file whose transactions are real and exclusive."""
    migrator = create_engine(engine.url, poolclass=NullPool)

    @event.listens_for(migrator, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own transaction handling skips DDL; turn it off and BEGIN ourselves below,
        # so that a half-applied migration rolls back instead of leaving a broken file.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # Batch migrations drop and recreate tables: with foreign keys on, dropping `runs` would
        # cascade-delete every iteration. The keys are checked once, before commit.
        cursor.execute("PRAGMA foreign_keys=OFF")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(migrator, "begin")
    def _begin(connection: Connection) -> None:
        # IMMEDIATE takes the write lock now, so two processes opening a new file do not both
        # create the schema: the second waits, then finds it at head.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return migrator


@contextmanager
def _migration_connection(engine: Engine) -> Iterator[Connection]:
    """A connection inside one transaction, committed only if the whole migration succeeds."""
    if not _is_sqlite_file(engine):
        # PostgreSQL has transactional DDL; an in-memory SQLite database is always brand new.
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Two processes opening a new database: the second waits, then finds it at head.
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK}, 0)")
            yield connection
        return
    migrator = _locked_sqlite_engine(engine)
    try:
        with migrator.begin() as connection:
            yield connection
            problems = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if problems:
                raise KnightError(
                    f"migration left {len(problems)} dangling foreign keys "
                    f"(first: {tuple(problems[0])}); the database was not changed"
                )
    finally:
        migrator.dispose()


def _stamp(connection: Connection, revision: str) -> None:
    """Record `revision` in Alembic's version table, as `alembic stamp` does: a new database then
    needs no Alembic (nor the Mako and Pygments it loads, ~0.2 s) until it is first migrated."""
    version = Table(
        VERSION_TABLE,
        MetaData(),
        Column("version_num", String(32), nullable=False),
        PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"),
    )
    version.create(connection)
    connection.execute(version.insert().values(version_num=revision))


def upgrade_to_head(engine: Engine, where: str) -> tuple[str | None, str]:
    """Create the schema in an empty database or migrate an older one; return (before, after)."""
    head = head_revision()
    # The usual case, checked without the write lock: every command opens the database.
    with engine.connect() as connection:
        if check_revision(connection, where) == head:
            return head, head
    with _migration_connection(engine) as connection:
        # Again under the lock: another process may have migrated meanwhile.
        before = check_revision(connection, where)
        if before == head:
            return before, head
        if before is None:
            # A brand-new database: create the tables directly and record that they are at head.
            Base.metadata.create_all(connection)
            _stamp(connection, head)
        else:
            from alembic import command

            command.upgrade(alembic_config(connection), "head")
        after = current_revision(connection)
    assert after == head, f"upgrade stopped at {after!r}, expected {head!r}"
    return before, head
