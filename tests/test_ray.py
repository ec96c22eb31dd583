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

import httpx
import pytest

from knight.evaluation import LocalEvaluator, MemoryCache, ray_evaluator
from knight.failure import Category, IterationStatus
from knight.problems import load_problem
from knight.service.tokens import create_token
from knight.store import open_store

pytest.importorskip("ray")
# One Ray head for the module: its tests run in one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("ray")

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
        # A graceful `ray start --block` shutdown takes ~30 s; the cluster is a throwaway: kill
        # every process of its session at once (the head, GCS, raylet, workers).
        for pid in _session_processes(head.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        head.wait()
        shutil.rmtree(temp, ignore_errors=True)


def _session_processes(session: int, title: bytes = b"") -> list[int]:
    """Pids of the processes of session `session` (the test cluster) whose command line starts
    with `title`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != session:
                continue
            if (entry / "cmdline").read_bytes().startswith(title):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def _task_workers(session: int) -> list[int]:
    """Pids of this cluster's Ray workers that are running an evaluation task right now."""
    return _session_processes(session, TASK_TITLE)


def _run(db: Path, evaluator: str) -> subprocess.Popen[str]:
    argv = [
        sys.executable, "-m", "knight.cli", "run", "-p", "rmsnorm", "--proposer", "offline",
        "--budget", "4", "--parallel", "2", "--evaluator", evaluator, "--db", str(db), "--json",
    ]  # fmt: skip
    return subprocess.Popen(
        argv, cwd=db.parent, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_ray_evaluator_matches_local_and_survives_a_killed_worker(
    ray_head: tuple[str, int], tmp_path: Path
) -> None:
    address, session = ray_head
    db = tmp_path / "knight.db"
    on_ray = _run(db, f"ray://{address}")
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
    with open_store(str(db)) as store:
        rows = store.history(store.resolve_run_id(None))
        sources = store.sources(r.candidate_hash for r in rows if r.candidate_hash)
    assert len(rows) == 4 and len(sources) == 4
    # No verdict of the run blames the kernel for the lost worker, and each is the local one.
    assert all(r.category != Category.worker_crash for r in rows)
    problem = load_problem("rmsnorm")
    with LocalEvaluator(isolate=False, cache=MemoryCache()) as local:
        for row in rows:
            expected = local.evaluate(sources[row.candidate_hash], problem)
            assert row.score_ns == expected.score_ns and expected.score_ns is not None
            assert row.harness == expected.harness
            assert [w.latency_ns for w in row.workloads] == [
                w.latency_ns for w in expected.workloads if not w.heldout
            ]
    accepted = [r.score_ns for r in rows if r.status == IterationStatus.accepted]
    assert json.loads(out.splitlines()[-1])["best_score_ns"] == min(accepted)


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


def test_serve_judges_on_the_ray_cluster_as_the_local_evaluator_does(
    ray_head: tuple[str, int], tmp_path: Path
) -> None:
    address, session = ray_head
    port = _free_port()
    tokens = tmp_path / "tokens"
    token = create_token("rw", tokens)
    log = (tmp_path / "server.log").open("ab")
    argv = [
        sys.executable, "-m", "knight.cli", "serve", "--port", str(port), "--db",
        str(tmp_path / "server.db"), "--token-file", str(tokens), "--state-dir",
        str(tmp_path / "state"), "--workers", "1", "--evaluator", f"ray://{address}",
    ]  # fmt: skip
    server = subprocess.Popen(argv, cwd=tmp_path, env=_env(), stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    source = (ROOT / "baselines" / "rmsnorm" / "baseline.py").read_text()
    source = source.replace("COLS_PER_TILE = 512", "COLS_PER_TILE = 1024")
    try:
        client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120
        )
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the server did not come up"
            try:
                if client.get("/v1/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        job = client.post(
            "/v1/evaluations",
            params={"wait": "false"},
            json={"source": source, "problem": "rmsnorm"},
        ).json()
        seen_on_cluster = False
        while not seen_on_cluster and time.monotonic() < deadline + 60:
            seen_on_cluster = bool(_task_workers(session))
            if client.get(f"/v1/evaluations/{job['id']}").json()["status"] in ("done", "error"):
                break
            time.sleep(0.05)
        done = client.get(f"/v1/evaluations/{job['id']}", params={"wait": 60}).json()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    assert done["status"] == "done", done
    assert seen_on_cluster, "the evaluation never ran as a task on the cluster"
    # In-process judging gives the same bits as worker processes, without their start-up.
    with LocalEvaluator(isolate=False, cache=MemoryCache()) as local:
        expected = local.evaluate(source, load_problem("rmsnorm"))
    report = done["report"]
    assert report["status"] == expected.status == "ok"
    assert report["candidate_hash"] == expected.candidate_hash
    assert report["score_ns"] == expected.score_ns and expected.score_ns is not None
    assert [w["latency_ns"] for w in report["workloads"]] == [
        w.latency_ns for w in expected.workloads
    ]


def test_serve_with_an_unreachable_cluster_stops_in_one_line(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    create_token("rw", tokens)
    nobody = f"ray://127.0.0.1:{_free_port()}"  # nothing listens there
    result = subprocess.run(
        [sys.executable, "-m", "knight.cli", "serve", "--evaluator", nobody,
         "--token-file", str(tokens), "--db", "s.db", "--state-dir", "state"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: cannot connect to Ray at {nobody.removeprefix('ray://')}: "
        "[Errno 111] Connection refused"
    ]


def test_consecutive_tasks_in_one_process_reuse_its_evaluator_and_workers() -> None:
    """A Ray worker process keeps one evaluator per problem: the second task starts no workers
    and judges exactly as the first (each task with its own cache)."""
    problem = load_problem("rmsnorm")
    files = ray_evaluator._problem_files(problem)
    settings = {"machine": None, "workers": 1, "timeout_s": 300.0, "memory_mb": 6144,
                "max_seeds": 1}  # fmt: skip
    source = problem.baseline_source()
    try:
        first = ray_evaluator.evaluate_task(source, files, False, [], settings, profile=False)
        [(_, evaluator)] = ray_evaluator._evaluators.values()
        started = {w.proc.pid for w in evaluator.pool._all}
        second = ray_evaluator.evaluate_task(source, files, False, [], settings, profile=False)
        assert {w.proc.pid for w in evaluator.pool._all} == started and started
        assert first["report"]["score_ns"] == second["report"]["score_ns"] is not None
        assert len(first["added"]) == len(second["added"]) > 0  # every task fills its own cache
    finally:
        ray_evaluator._close_evaluators()
    assert not ray_evaluator._evaluators


def test_a_task_rebuilds_the_problem_once_per_node_and_repairs_a_damaged_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray kills idle worker processes without their exit handlers, so the problem's files live in
    one folder per problem version in the user's cache (never one per process left in /tmp); a
    copy that does not hold exactly the driver's files is replaced, never trusted."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    files = ray_evaluator._problem_files(load_problem("rmsnorm"))
    digest = ray_evaluator._files_digest(files)
    root = ray_evaluator._problem_folder(files, digest)
    assert root.parent == tmp_path / "knight" / "problems"
    assert ray_evaluator._problem_folder(files, digest) == root
    spec = next(name for name in files if name.endswith(".toml"))
    (root / spec).write_bytes(b"tampered")
    (root / "extra.py").write_text("x = 1\n")
    assert ray_evaluator._problem_folder(files, digest) == root
    assert {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} == set(files)
    assert all((root / name).read_bytes() == data for name, data in files.items())
    assert [p.name for p in root.parent.iterdir()] == [root.name]  # no .incoming / .stale left
    assert not list((tmp_path / "tmp").iterdir())
