"""Shared fixtures: a real PostgreSQL server for the store and loop tests, and `store_url`.

The server runs from the PostgreSQL binaries on this machine (`/usr/lib/postgresql/*/bin`, or
`pg_ctl` on PATH) in a temporary directory, listening on 127.0.0.1 only. PostgreSQL refuses to run
as root: as root, the server runs as the unprivileged user `knight-pg` (created when missing).
Every test gets a fresh database. Without PostgreSQL binaries the PostgreSQL cases are skipped
(`.ci/run` installs them).
"""

from __future__ import annotations

import gc
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from knight.blas import default_to_one_thread

PG_USER = "knight-pg"

# CI installs Knight into site-packages (not editable), where the package cannot see the checkout's
# problems and skills; every `knight` subprocess a test starts inherits these.
ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("KNIGHT_BASELINES", str(ROOT / "baselines"))
os.environ.setdefault("KNIGHT_SKILLS", str(ROOT / "skills"))
# pytest-xdist already runs one test per core: a second evaluation worker of each kind inside a
# test would only add interpreter start-ups. Tests of parallel judging ask for their workers.
os.environ.setdefault("KNIGHT_WORKERS", "1")
# As `knight` itself does: the tests' in-process simulations and every subprocess, one BLAS thread
# (numpy is not loaded yet: the test modules load it).
default_to_one_thread()


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to run when `--dist loadgroup` would silently stop grouping: pytest-xdist tags a
    grouped test by rewriting its `_nodeid`, which pytest 9.2 no longer has, and then the Ray head
    and the MoE baselines would each be built once per worker."""
    grouping = config.getoption("dist", "no") == "loadgroup" and config.getoption("numprocesses")
    if grouping and not hasattr(pytest.Item, "_nodeid"):
        raise pytest.UsageError(
            f"pytest-xdist cannot group tests under pytest {pytest.__version__};"
            " install the test extra's pinned versions: pip install '.[test]'"
        )


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection built (imported modules, test items) lives for the whole session: move it
    out of the cyclic collector's reach, as the evaluation workers do with their imports, so the
    full collections that long simulations trigger do not walk it again each time."""
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def shared_judge() -> Iterator[object]:
    """One in-process evaluator (one seed per workload) for the modules of the xdist group
    "judge": each problem's baseline is then simulated once per session, not once per module and
    worker (the MoE baseline alone is seconds). Results are identical by design (determinism);
    only the cache is shared."""
    from knight.evaluation import LocalEvaluator, MemoryCache

    with LocalEvaluator(isolate=False, cache=MemoryCache(), max_seeds=1) as evaluator:
        yield evaluator


def _bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    return Path(dirs[-1]) if dirs else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    """A running server: where it listens and how to reach it as its superuser."""

    host: str
    port: int
    user: str

    def url(self, database: str) -> str:
        """A SQLAlchemy URL of `database` on this server (psycopg 3 driver)."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = "knight_" + uuid.uuid4().hex[:12]
        dsn = f"host={self.host} port={self.port} user={self.user} dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _as_server_user(argv: list[str], user: str | None) -> list[str]:
    return ["runuser", "-u", user, "--", *argv] if user else argv


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """Start PostgreSQL once per test session (skipped where it is not installed)."""
    bindir = _bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql)")
    pytest.importorskip("psycopg")
    user = None
    if os.geteuid() == 0:
        user = PG_USER
        if subprocess.run(["id", "-u", user], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "--system", "--no-create-home", user], check=True)
    home = Path(tempfile.mkdtemp(prefix="knight-pg-"))
    home.chmod(0o755)
    data, sockets = home / "data", home / "sockets"
    sockets.mkdir()
    if user:
        shutil.chown(home, user)
        shutil.chown(sockets, user)
    db_user = user or os.environ.get("USER") or "postgres"
    init = [str(bindir / "initdb"), "-D", str(data), "-U", db_user, "--auth=trust", "-E", "UTF8"]
    subprocess.run(_as_server_user(init, user), check=True, capture_output=True)
    port = _free_port()
    options = f"-k {sockets} -c listen_addresses=127.0.0.1 -p {port} -c fsync=off"
    start = [str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(home / "log"), "-w"]
    subprocess.run(_as_server_user([*start, "start"], user), check=True, capture_output=True)
    try:
        yield PostgresServer("127.0.0.1", port, db_user)
    finally:
        stop = [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
        subprocess.run(_as_server_user(stop, user), capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str:
    """The URL of a fresh, empty database: in-memory SQLite, then a PostgreSQL database."""
    if request.param == "sqlite":
        return ":memory:"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database()
