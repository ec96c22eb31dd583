"""A real `knight serve` on a free 127.0.0.1 port, for the tests that talk to it (service, report).

`Server(home, *extra_options, env=...)` starts it (with `env` added to this environment) with a
read-write and a read-only token (attributes `rw`, `ro`), its database at `home/server.db` and its
log at `home/server.log`; `stop()`, `start()` restart it on the same port and database;
`client(token)` is an httpx client for it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from knight.service.tokens import create_token


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def knight_process(
    *args: str, cwd: Path, env: dict[str, str] | None = None, **kw
) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "knight.cli", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        **kw,
    )


class Server:
    """A `knight serve` process on a free loopback port, restartable on the same port and db."""

    def __init__(self, home: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.home, self.extra, self.env = home, extra, env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        tokens = home / "tokens"
        self.rw = create_token("rw", tokens)
        self.ro = create_token("ro", tokens)
        self.db = home / "server.db"
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        log = open(self.home / "server.log", "ab")
        self.proc = knight_process(
            "serve",
            "--port",
            str(self.port),
            "--db",
            str(self.db),
            "--token-file",
            str(self.home / "tokens"),
            "--state-dir",
            str(self.home / "state"),
            "--workers",
            "1",
            "--log-level",
            "info",
            *self.extra,
            cwd=self.home,
            env=self.env,
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.home / "server.log").read_text()[-2000:]
            try:
                if httpx.get(self.url + "/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("the server did not come up")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)

    def client(self, token: str | None = "rw") -> httpx.Client:
        headers = {} if token is None else {"Authorization": f"Bearer {getattr(self, token)}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120)
