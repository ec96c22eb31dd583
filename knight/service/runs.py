"""Runs started over HTTP: each is a `knight run` child process; the database says how it goes.

The supervisor remembers its children (run id, pid, log) in a state file, so a restarted server
adopts children that outlived it and marks runs whose process is gone as interrupted (resumable
with `POST /v1/runs/{id}/resume`). Cancel is SIGINT: the run records itself as interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from knight.errors import NotFoundError
from knight.failure import RunStatus
from knight.service.refused import Refused
from knight.service.schemas import RunRequest
from knight.store import RunStore

START_TIMEOUT_S = 600.0  # the run exists once its baseline is judged; moe_decode takes a while


@dataclass
class Child:
    """A `knight run` process this server started (or adopted after a restart)."""

    run_id: int
    pid: int
    log: str


class RunSupervisor:
    """Starts, cancels, resumes and watches the runs this server owns."""

    def __init__(
        self,
        db: str,
        store: RunStore,
        state_dir: Path,
        workers: int | None = None,
        evaluator: str = "local",
    ) -> None:
        """Runs write to `db` and judge with `evaluator` (local, ray or ray://HOST:PORT)."""
        self.db, self.store, self.state_dir, self.workers = db, store, state_dir, workers
        self.evaluator = evaluator
        (state_dir / "logs").mkdir(parents=True, exist_ok=True)
        (state_dir / "scripts").mkdir(parents=True, exist_ok=True)
        self._children: dict[int, Child] = {}
        self._popen: dict[int, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()  # one launch at a time: a new run row is ours

    # ------------------------------------------------------------------ state

    @property
    def _state_file(self) -> Path:
        return self.state_dir / "children.json"

    def _save(self) -> None:
        tmp = self._state_file.with_suffix(f".{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps([asdict(c) for c in self._children.values()]))
        os.replace(tmp, self._state_file)

    def recover(self) -> list[int]:
        """After a (re)start: adopt surviving children; mark runs whose process died interrupted."""
        try:
            saved = [Child(**c) for c in json.loads(self._state_file.read_text())]
        except (OSError, ValueError, TypeError):
            saved = []
        with self._lock:
            for c in saved:
                if _is_knight_run(c.pid):
                    self._children[c.run_id] = c
            self._save()
        return self._mark_orphans({c.run_id for c in saved})

    def reap(self) -> list[int]:
        """Forget children that exited; a run they left 'running' (a crash) becomes interrupted."""
        with self._lock:
            gone = [rid for rid, c in self._children.items() if not self._alive(rid, c)]
            for rid in gone:
                del self._children[rid]
                self._popen.pop(rid, None)
            if gone:
                self._save()
        return self._mark_orphans(set(gone))

    def _mark_orphans(self, run_ids: set[int]) -> list[int]:
        marked = []
        for rid in sorted(run_ids - set(self._children)):
            try:
                status = self.store.run(rid).status
            except NotFoundError:
                continue
            if status == RunStatus.running:
                self.store.close_run(rid, RunStatus.interrupted)
                marked.append(rid)
        return marked

    def _alive(self, run_id: int, c: Child) -> bool:
        p = self._popen.get(run_id)
        if p is not None:
            return p.poll() is None
        return _is_knight_run(c.pid)

    def managed(self, run_id: int) -> bool:
        """Whether a live child of this server is running `run_id`."""
        with self._lock:
            c = self._children.get(run_id)
            return c is not None and self._alive(run_id, c)

    def log_of(self, run_id: int) -> Path | None:
        """The log file of a run this server started, if it still knows it."""
        with self._lock:
            c = self._children.get(run_id)
        if c is not None:
            return Path(c.log)
        found = sorted((self.state_dir / "logs").glob(f"run-{run_id}-*.log"))
        return found[-1] if found else None

    # ------------------------------------------------------------------ start / resume / cancel

    def start(self, req: RunRequest) -> int:
        """Launch a run and return its id once it exists in the database (blocks until then)."""
        args = [
            "--problem",
            req.problem,
            "--budget",
            str(req.budget),
            "--proposer",
            req.proposer,
            "--seed",
            str(req.seed),
            "--min-gain",
            str(req.min_gain),
            "--fix-rounds",
            str(req.fix_rounds),
        ]
        if req.machine:
            args += ["--machine", req.machine]
        if req.model:
            args += ["--model", req.model]
        if req.max_cost is not None:
            args += ["--max-cost", str(req.max_cost)]
        if req.time_limit is not None:
            args += ["--time-limit", str(req.time_limit)]
        if req.proposer == "scripted":
            if not req.script:
                raise Refused(422, "the scripted proposer needs 'script': a list of proposals")
            path = self.state_dir / "scripts" / f"{uuid.uuid4().hex}.jsonl"
            path.write_text("".join(json.dumps(p) + "\n" for p in req.script))
            args += ["--script", str(path)]
        with self._start_lock:
            before = self._max_run_id()
            launch_log = self.state_dir / "logs" / f"launch-{uuid.uuid4().hex}.log"
            proc = self._spawn(args, launch_log)
            run_id = self._await_run(proc, before, req, launch_log)
            log = launch_log.rename(
                self.state_dir / "logs" / f"run-{run_id}-{int(time.time())}.log"
            )
            self._adopt(run_id, proc, log)
        return run_id

    def resume(self, run_id: int, budget: int | None) -> None:
        """Continue an interrupted or finished run in a new child."""
        if self.managed(run_id) or self.store.run(run_id).status == RunStatus.running:
            raise Refused(409, f"run {run_id} is still running")
        args = ["--resume", str(run_id)] + (["--budget", str(budget)] if budget else [])
        log = self.state_dir / "logs" / f"run-{run_id}-{int(time.time())}.log"
        self._adopt(run_id, self._spawn(args, log), log)

    def cancel(self, run_id: int, wait_s: float = 30.0) -> bool:
        """SIGINT the run's child and wait for it to record itself interrupted; False if not ours."""
        with self._lock:
            c = self._children.get(run_id)
            proc = self._popen.get(run_id)
        if c is None or not self._alive(run_id, c):
            return False
        os.kill(c.pid, signal.SIGINT)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and self._alive(run_id, c):
            time.sleep(0.1)
        if proc is not None and proc.poll() is None:
            proc.kill()  # did not stop in time; reap() marks its run interrupted
        self.reap()
        return True

    def close(self, wait_s: float = 10.0) -> None:
        """On shutdown: interrupt our children (they record it) and wait briefly."""
        with self._lock:
            procs = list(self._popen.items())
        for _, p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + wait_s
        for _, p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
        self.reap()

    # ------------------------------------------------------------------ helpers

    def _spawn(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "knight.cli", "run", "--db", self.db, "--json", *args]
        if self.workers:
            cmd += ["--workers", str(self.workers)]
        if self.evaluator != "local":
            cmd += ["--evaluator", self.evaluator]
        with open(log, "ab") as f:
            # Its own session: a Ctrl-C meant for the server does not reach the run unannounced.
            return subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _adopt(self, run_id: int, proc: subprocess.Popen[bytes], log: Path) -> None:
        with self._lock:
            self._children[run_id] = Child(run_id, proc.pid, str(log))
            self._popen[run_id] = proc
            self._save()

    def _max_run_id(self) -> int:
        return max((r.id for r in self.store.list_runs()), default=0)

    def _await_run(
        self, proc: subprocess.Popen[bytes], before: int, req: RunRequest, log: Path
    ) -> int:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            new = [
                r.id
                for r in self.store.list_runs()
                if r.id > before
                and (r.problem_id, r.budget, r.seed) == (req.problem, req.budget, req.seed)
            ]
            if new:
                return new[0]
            if proc.poll() is not None:
                raise Refused(422, f"the run did not start: {_last_line(log)}")
            time.sleep(0.1)
        proc.kill()
        raise Refused(504, f"the run did not start within {START_TIMEOUT_S:.0f} s")


def tail(path: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log file."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16_384))
            return "\n".join(f.read().decode("utf-8", "replace").splitlines()[-lines:])
    except OSError:
        return ""


def _last_line(log: Path) -> str:
    text = tail(log, 5).strip().splitlines()
    return text[-1] if text else "it exited without a message"


def _is_knight_run(pid: int) -> bool:
    """Whether `pid` is alive and a `knight.cli run` process (not a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and b"knight.cli" in cmdline and b"run" in cmdline
