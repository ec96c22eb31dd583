"""Knight as a service: a real `knight serve` on 127.0.0.1, started by these tests (no mocks)."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from knight_server import Server, knight_process

from knight.errors import KnightError, UsageError
from knight.problems import load_problem
from knight.service.remote import RemoteEvaluator
from knight.service.tokens import TokenStore, create_token, token_hash
from knight.store import Iteration, open_database

# One `knight serve` for the module (its start-up is most of a short test): one xdist worker.
pytestmark = pytest.mark.xdist_group("service")
ROOT = Path(__file__).resolve().parents[1]
QUEUE = 6
RMSNORM = (ROOT / "baselines" / "rmsnorm" / "baseline.py").read_text()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # A model provider that never answers (a loopback socket nobody accepts on): a run with the
    # claude proposer stays running, however fast or slow the machine, until it is cancelled.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        env = {
            "ANTHROPIC_API_KEY": "test-key-never-sent-anywhere-but-loopback",
            "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{silent.getsockname()[1]}",
        }
        # A small queue: the 100-request test needs 6 slots (identical requests share one).
        srv = Server(tmp_path_factory.mktemp("service"), "--max-queue", str(QUEUE), env=env)
        yield srv
        srv.stop()


def _metric(client: httpx.Client, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


# ----------------------------------------------------------------------------- tokens


def test_token_file_keeps_only_hashes_and_scopes(tmp_path: Path) -> None:
    f = tmp_path / "tokens"
    rw, ro = create_token("rw", f), create_token("ro", f)
    text = f.read_text()
    assert rw not in text and ro not in text
    assert text.splitlines() == [f"{token_hash(rw)} rw", f"{token_hash(ro)} ro"]
    assert f.stat().st_mode & 0o077 == 0
    store = TokenStore.load(f)
    assert (store.scope_of(rw), store.scope_of(ro), store.scope_of(rw + "x")) == ("rw", "ro", None)
    with pytest.raises(UsageError, match="unknown scope"):
        create_token("admin", f)
    (tmp_path / "bad").write_text("abc rw\n")
    with pytest.raises(UsageError, match="bad:1"):
        TokenStore.load(tmp_path / "bad")


def test_token_create_cli_prints_the_token_once(tmp_path: Path) -> None:
    p = knight_process(
        "token",
        "create",
        "--scope",
        "ro",
        "--token-file",
        "t",
        "--json",
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, _ = p.communicate(timeout=60)
    data = json.loads(out)
    assert p.returncode == 0 and data["scope"] == "ro"
    assert (tmp_path / "t").read_text() == f"{token_hash(data['token'])} ro\n"


def test_serve_without_tokens_is_a_usage_error(tmp_path: Path) -> None:
    from knight.service.commands import serve_cmd

    with pytest.raises(UsageError, match="cannot read token file"):
        serve_cmd(token_file=tmp_path / "missing", state_dir=tmp_path / "state")
    (tmp_path / "empty").write_text("# nobody yet\n")
    with pytest.raises(UsageError, match="knight token create"):
        serve_cmd(token_file=tmp_path / "empty", state_dir=tmp_path / "state")


# ----------------------------------------------------------------------------- auth


def test_every_endpoint_but_health_needs_a_token(server: Server) -> None:
    with server.client() as c:
        spec = c.get("/openapi.json").json()
    anonymous = server.client(None)
    checked = 0
    for path, methods in spec["paths"].items():
        concrete = path.replace("{run_id}", "1").replace("{number}", "1").replace("{job_id}", "x")
        for method in methods:
            r = anonymous.request(method.upper(), concrete, json={})
            if path == "/v1/health":
                assert r.status_code == 200
            else:
                assert r.status_code == 401, (method, path, r.text)
                assert r.headers["www-authenticate"] == "Bearer"
                checked += 1
    assert checked >= 14
    assert anonymous.get("/v1/runs", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_read_only_token_reads_but_cannot_start_a_run_or_evaluate(server: Server) -> None:
    with server.client("ro") as c:
        assert c.get("/v1/runs").status_code == 200
        listed = [p["id"] for p in c.get("/v1/problems").json()]
        assert listed == sorted(listed) and {"moe_decode", "moe_router", "rmsnorm"} <= set(listed)
        r = c.post("/v1/runs", json={"problem": "rmsnorm", "budget": 1})
        assert r.status_code == 403 and "read-only" in r.json()["detail"]
        assert (
            c.post("/v1/evaluations", json={"source": RMSNORM, "problem": "rmsnorm"}).status_code
            == 403
        )


# ----------------------------------------------------------------------------- evaluations


def test_evaluation_answers_the_protocol_report(server: Server) -> None:
    with server.client() as c:
        r = c.post("/v1/evaluations", json={"source": RMSNORM, "problem": "rmsnorm"})
        assert r.status_code == 200
        report = r.json()
        assert report["status"] == "ok" and report["speedup"] == 1.0
        assert report["problem_hash"] == load_problem("rmsnorm").hash
        stale = c.post(
            "/v1/evaluations",
            json={"source": RMSNORM, "problem": "rmsnorm", "problem_hash": "0123456789abcdef"},
        )
        assert stale.status_code == 409 and load_problem("rmsnorm").hash in stale.json()["detail"]
        assert c.post("/v1/evaluations", json={"source": "", "problem": "nope"}).status_code == 404
        assert c.post("/v1/evaluations", json={"problem": "rmsnorm"}).status_code == 422
        huge = c.post("/v1/evaluations", json={"source": "#" * 2_000_000, "problem": "rmsnorm"})
        assert huge.status_code == 413 and "larger than" in huge.json()["detail"]
        job = c.post(
            "/v1/evaluations",
            params={"wait": "false"},
            json={"source": RMSNORM + "# async\n", "problem": "rmsnorm"},
        )
        assert (
            job.status_code == 202
            and job.headers["location"] == f"/v1/evaluations/{job.json()['id']}"
        )
        done = c.get(job.headers["location"], params={"wait": 30}).json()
        assert done["status"] == "done" and done["report"]["score_ns"] == report["score_ns"]


def test_remote_evaluator_matches_local_and_refuses_other_versions(server: Server) -> None:
    from knight.evaluation import LocalEvaluator, MemoryCache

    problem = load_problem("rmsnorm")
    source = RMSNORM.replace("COLS_PER_TILE = 512", "COLS_PER_TILE = 1024")
    with (
        LocalEvaluator(workers=1, cache=MemoryCache()) as local,
        RemoteEvaluator(server.url, server.rw) as remote,
    ):
        here, there = local.evaluate(source, problem), remote.evaluate(source, problem)
        assert (there.status, there.score_ns, there.harness) == (
            here.status,
            here.score_ns,
            here.harness,
        )
        assert [w.latency_ns for w in there.workloads] == [w.latency_ns for w in here.workloads]
        bad = remote.evaluate("import os\n", problem)
        assert bad.failure is not None and bad.failure.category == "forbidden_construct"
        other = copy.copy(problem)
        other.hash = "0000000000000000"  # a client holding another version of the problem
        with pytest.raises(KnightError, match=f"holds rmsnorm version {problem.hash}"):
            remote.evaluate(source, other)
    with (
        RemoteEvaluator(server.url, "wrong") as remote,
        pytest.raises(KnightError, match="unknown token"),
    ):
        remote.evaluate(source, problem)


def test_100_concurrent_evaluations_single_flight(server: Server) -> None:
    variants = [RMSNORM + f"# variant {k}\n" for k in range(4)]
    broken = "def kernel(:\n"
    with server.client() as c:
        warm = c.post("/v1/evaluations", json={"source": RMSNORM, "problem": "rmsnorm"}).json()
        before = _metric(c, "knight_simulated_runs_total")
    sources = [RMSNORM, *variants, broken]
    plan = [sources[i % len(sources)] for i in range(100)]

    async def fire() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(
            base_url=server.url,
            timeout=300,
            limits=limits,
            headers={"Authorization": f"Bearer {server.rw}"},
        ) as ac:
            return await asyncio.gather(
                *[
                    ac.post("/v1/evaluations", json={"source": s, "problem": "rmsnorm"})
                    for s in plan
                ]
            )

    answers = asyncio.run(fire())
    assert [r.status_code for r in answers] == [200] * 100
    for source, r in zip(plan, answers, strict=True):
        report = r.json()
        if source is broken:
            assert report["failure"]["category"] == "syntax_error" and report["simulated_runs"] == 0
        else:
            assert report["status"] == "ok" and report["score_ns"] == warm["score_ns"]
            assert report["candidate_hash"] != warm["candidate_hash"] or source is RMSNORM
    # Each variant's runs (every workload and seed) simulated once; determinism is checked by
    # tracing again under another hash seed, which simulates nothing.
    per_candidate = sum(len(w["seeds"]) for w in warm["workloads"])
    with server.client() as c:
        assert _metric(c, "knight_simulated_runs_total") - before == len(variants) * per_candidate
        assert _metric(c, "knight_evaluations_in_flight") == 0


def test_full_queue_answers_429_with_retry_after(server: Server) -> None:
    cheap = {"problem": "rmsnorm", "max_seeds": 1, "profile": False}
    body = [{"source": RMSNORM + f"# queued {k}\n", **cheap} for k in range(QUEUE + 1)]
    with server.client() as c:
        refused_before = _metric(c, "knight_evaluations_refused_total")
        answers = [c.post("/v1/evaluations", params={"wait": "false"}, json=b) for b in body]
        assert [r.status_code for r in answers] == [202] * QUEUE + [429]
        assert int(answers[-1].headers["retry-after"]) >= 1
        assert "queue is full" in answers[-1].json()["detail"]
        # The same request as one in flight joins it instead of being refused.
        same = c.post("/v1/evaluations", params={"wait": "false"}, json=body[0])
        assert same.status_code == 202 and same.json()["id"] == answers[0].json()["id"]
        for r in answers[:-1]:
            done = c.get(f"/v1/evaluations/{r.json()['id']}", params={"wait": 60}).json()
            assert done["status"] == "done"
        assert _metric(c, "knight_evaluations_refused_total") == refused_before + 1


# ----------------------------------------------------------------------------- runs


def _history_cli(db: Path, run_id: int) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "knight.cli",
            "history",
            "--db",
            str(db),
            "--run",
            str(run_id),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout)


def test_run_over_http_streams_iterations_and_history_matches_cli(server: Server) -> None:
    with server.client() as c:
        r = c.post("/v1/runs", json={"problem": "rmsnorm", "budget": 3, "proposer": "offline"})
        assert r.status_code == 201, r.text
        run_id = r.json()["run_id"]
        events: list[tuple[str, dict]] = []
        with c.stream("GET", f"/v1/runs/{run_id}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            kind = None
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    events.append((kind, json.loads(line[6:])))
        iterations = [d for k, d in events if k == "iteration"]
        assert [d["number"] for d in iterations] == [1, 2, 3]
        assert events[-1] == ("end", {"run_id": run_id, "status": "finished"})
        over_http = c.get(f"/v1/runs/{run_id}/iterations").json()
        assert over_http == _history_cli(server.db, run_id)
        assert over_http["iterations"] == iterations
        one = c.get(f"/v1/runs/{run_id}/iterations/2").json()
        assert one["number"] == 2 and one["hypothesis"] == iterations[1]["hypothesis"]
        assert c.get(f"/v1/runs/{run_id}/iterations/9").status_code == 404
        info = c.get(f"/v1/runs/{run_id}").json()
        assert (info["status"], info["iterations"]) == ("finished", 3)
        # Reconnecting with Last-Event-ID sends only what came after it.
        with c.stream("GET", f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": "2"}) as stream:
            ids = [line for line in stream.iter_lines() if line.startswith("id: ")]
        assert ids == ["id: 3"]
        replay = c.get(f"/v1/runs/{run_id}/replay").json()
        assert replay["all_match"] is True and replay["final_source"]
        assert c.get("/v1/runs/999").status_code == 404


def test_cancel_and_resume_a_run(server: Server) -> None:
    with server.client() as c:
        run_id = c.post("/v1/runs", json={"problem": "rmsnorm", "budget": 40, "seed": 7}).json()[
            "run_id"
        ]
        cancelled = c.post(f"/v1/runs/{run_id}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "interrupted"
        assert c.post(f"/v1/runs/{run_id}/cancel").status_code == 409
        resumed = c.post(f"/v1/runs/{run_id}/resume", json={"budget": 41})
        assert resumed.status_code == 202 and resumed.json()["managed"] is True
        assert c.post(f"/v1/runs/{run_id}/resume").status_code == 409
        assert c.post(f"/v1/runs/{run_id}/cancel").json()["status"] == "interrupted"
        text = c.get("/metrics").text
        assert 'knight_runs{status="interrupted"}' in text


def test_server_restart_adopts_live_runs_and_interrupts_dead_ones(server: Server) -> None:
    srv = server
    # Both runs wait on the silent model provider: neither can finish on its own.
    waiting = {"problem": "rmsnorm", "budget": 40, "proposer": "claude"}
    with srv.client() as c:
        dead = c.post("/v1/runs", json=waiting).json()["run_id"]
        alive = c.post("/v1/runs", json={**waiting, "seed": 1}).json()["run_id"]
    state = json.loads((srv.home / "state" / "children.json").read_text())
    child = next(ch["pid"] for ch in state if ch["run_id"] == dead)
    srv.stop(signal.SIGKILL)
    os.kill(child, signal.SIGKILL)  # this run dies with no chance to record it; the other goes on
    srv.start()
    with srv.client() as c:
        info = c.get(f"/v1/runs/{dead}").json()
        assert (info["status"], info["managed"]) == ("interrupted", False)
        info = c.get(f"/v1/runs/{alive}").json()
        assert (info["status"], info["managed"]) == ("running", True)
        assert c.post(f"/v1/runs/{alive}/cancel").json()["status"] == "interrupted"
        assert c.post(f"/v1/runs/{dead}/resume").status_code == 202
        assert c.post(f"/v1/runs/{dead}/cancel").json()["status"] == "interrupted"


def test_client_run_survives_a_killed_server(server: Server, tmp_path: Path) -> None:
    srv = server
    db = tmp_path / "client.db"
    log = open(tmp_path / "client.log", "wb")
    client = knight_process(
        "run",
        "--evaluator",
        srv.url,
        "--problem",
        "rmsnorm",
        # A machine no other test of the module judges on: the server's cache holds none of these
        # candidates, so every iteration needs the server and the kill lands mid-run.
        "--machine",
        "trn3",
        "--budget",
        "5",
        "--proposer",
        "offline",
        "--db",
        str(db),
        "--json",
        cwd=tmp_path,
        env={"KNIGHT_TOKEN": srv.rw},
        stdout=subprocess.PIPE,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if db.exists():
                with open_database(str(db), create=False).session() as s:
                    if s.query(Iteration).count() >= 2:
                        break
            time.sleep(0.05)
        assert client.poll() is None, "the run ended before the server could be killed"
        srv.stop(signal.SIGKILL)
        deadline = time.monotonic() + 60
        while "cannot reach it" not in (tmp_path / "client.log").read_text():  # and backs off
            assert time.monotonic() < deadline, "the client never noticed the server was gone"
            time.sleep(0.05)
        srv.start()
        out, _ = client.communicate(timeout=240)
        assert client.returncode == 0, (tmp_path / "client.log").read_text()[-2000:]
        summary = json.loads(out)
        assert (summary["status"], summary["iterations"]) == ("finished", 5)
        said = (tmp_path / "client.log").read_text()
        assert f"the evaluator at {srv.url}: cannot reach it" in said and "answers again" in said
        database = open_database(str(db), create=False)
        with database.session() as s:
            numbers = sorted(n for (n,) in s.query(Iteration.number).all())
        assert numbers == [1, 2, 3, 4, 5]
        assert database.integrity_check() == "ok"
    finally:
        if client.poll() is None:
            client.kill()


def test_live_report_pages_take_a_token_and_no_token_is_ever_logged(server: Server) -> None:
    with server.client() as c:
        runs = c.get("/v1/runs").json()
        run_id = (
            runs[0]["run_id"]
            if runs
            else c.post("/v1/runs", json={"problem": "rmsnorm", "budget": 1}).json()["run_id"]
        )
    anonymous = server.client(None)
    assert anonymous.get(f"/runs/{run_id}").status_code == 401
    page = anonymous.get(f"/runs/{run_id}", params={"token": server.ro})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    state = anonymous.get(f"/runs/{run_id}/state.json", params={"token": server.ro})
    assert state.status_code == 200 and state.json()["status"]
    log = (server.home / "server.log").read_text()
    assert f"/runs/{run_id}?token=<redacted>" in log
    assert server.ro not in log and server.rw not in log
