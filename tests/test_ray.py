"""`knight run --evaluator ray`: a real local Ray cluster judges candidates exactly as the local
evaluator does, and a task whose Ray worker is killed is retried without changing the run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from knight.store import open_store

pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
TASK_TITLE = b"ray::evaluate_task"  # Ray names a worker process after the task it runs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("ANTHROPIC_API_KEY", None)
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture(scope="module")
def ray_head() -> Iterator[tuple[str, int]]:
    """A Ray head on 127.0.0.1 with 2 CPUs, no dashboard, no usage stats; (address, session id)."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="kray-")  # short: Ray's socket paths must fit 107 bytes
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    head = subprocess.Popen(
        [
            ray, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
            "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
            f"--temp-dir={temp}",
        ],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # the head, raylet and workers: one process group to stop
    )  # fmt: skip
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.5)
    else:
        os.killpg(head.pid, signal.SIGKILL)
        pytest.fail("the Ray head did not start within 120 s")
    try:
        yield address, head.pid
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)


def _task_workers(session: int) -> list[int]:
    """Pids of this cluster's Ray workers that are running an evaluation task right now."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != session:
                continue
            if (entry / "cmdline").read_bytes().startswith(TASK_TITLE):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _run(db: Path, evaluator: str) -> subprocess.Popen[str]:
    argv = [
        sys.executable, "-m", "knight.cli", "run", "-p", "rmsnorm", "--proposer", "offline",
        "--budget", "4", "--parallel", "2", "--evaluator", evaluator, "--db", str(db), "--json",
    ]  # fmt: skip
    return subprocess.Popen(
        argv, cwd=db.parent, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _verdicts(db: Path) -> list[tuple[int, str | None, str, str | None, float | None]]:
    with open_store(str(db)) as store:
        rows = store.history(store.resolve_run_id(None))
    return [
        (r.number, r.candidate_hash, r.status.value, r.category and r.category.value, r.score_ns)
        for r in rows
    ]


def test_ray_evaluator_matches_local_and_survives_a_killed_worker(
    ray_head: tuple[str, int], tmp_path: Path
) -> None:
    address, session = ray_head
    (tmp_path / "ray").mkdir()
    (tmp_path / "local").mkdir()
    on_ray = _run(tmp_path / "ray" / "knight.db", f"ray://{address}")
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and on_ray.poll() is None and time.monotonic() < deadline:
        busy = _task_workers(session)
        if busy:
            killed = busy[0]
            os.kill(killed, signal.SIGKILL)  # the node "loses" the worker mid-task
        time.sleep(0.05)
    out, err = on_ray.communicate(timeout=600)
    assert on_ray.returncode == 0, err
    assert killed is not None, "no evaluation task was seen running on the cluster"
    local = _run(tmp_path / "local" / "knight.db", "local")
    local_out, local_err = local.communicate(timeout=600)
    assert local.returncode == 0, local_err
    ray_rows, local_rows = (
        _verdicts(tmp_path / "ray" / "knight.db"),
        _verdicts(tmp_path / "local" / "knight.db"),
    )
    assert len(ray_rows) == 4 and ray_rows == local_rows
    assert (
        json.loads(out.splitlines()[-1])["best_score_ns"]
        == json.loads(local_out.splitlines()[-1])["best_score_ns"]
    )
    # No verdict of the run blames the kernel for the lost worker.
    assert all(category != "worker_crash" for _, _, _, category, _ in ray_rows)


def test_an_unknown_evaluator_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "knight.cli", "run", "--evaluator", "dask", "--db", "x.db"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "unknown --evaluator 'dask'" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x.db").exists()
