"""The ASGI app of `knight serve`: evaluations, runs, listings, health and metrics over HTTP.

No `from __future__ import annotations` here: FastAPI must see the dependencies in annotations.
"""

import asyncio
import dataclasses
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

import knight
from knight.errors import KnightError, NotFoundError
from knight.evaluation import FileCache
from knight.evaluation.ray_evaluator import parse_evaluator
from knight.npu.machine import PRESET_NAMES, load_machine
from knight.problems import list_problems
from knight.service import history
from knight.service.evaluations import EvaluationQueue
from knight.service.limits import BodyLimit
from knight.service.refused import Refused
from knight.service.runs import RunSupervisor, tail
from knight.service.schemas import (
    EvaluationJob,
    EvaluationRequest,
    Health,
    ResumeRequest,
    RunRequest,
    RunView,
)
from knight.service.tokens import TokenStore
from knight.store import RunStore, open_store

log = logging.getLogger("knight.service")
EVENT_POLL_S = 0.5  # how often the event stream looks for new iterations
KEEPALIVE_S = 15.0


@dataclass
class ServiceSettings:
    """Everything `knight serve` is started with."""

    db: str
    tokens: TokenStore
    state_dir: Path
    cache_dir: Path
    workers: int | None = None
    max_body_bytes: int = 1_048_576
    max_queue: int = 64
    request_timeout_s: float = 600.0
    run_timeout_s: float = 300.0
    memory_mb: int = 6144
    evaluator: str = "local"  # local, ray or ray://HOST:PORT: where evaluations and runs judge


@dataclass
class _State:
    settings: ServiceSettings
    store: RunStore
    queue: EvaluationQueue
    runs: RunSupervisor


def create_app(settings: ServiceSettings) -> FastAPI:
    """Build the service; the database, queue and run supervisor start with the app."""
    state: dict[str, _State] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        store = open_store(settings.db, "write", create=True)
        problems = {p.id: p for p in list_problems()}
        kind, address = parse_evaluator(settings.evaluator)
        queue = EvaluationQueue(
            problems,
            FileCache(settings.cache_dir),
            workers=settings.workers,
            run_timeout_s=settings.run_timeout_s,
            memory_mb=settings.memory_mb,
            max_queue=settings.max_queue,
            on_ray=kind == "ray",
            ray_address=address,
        )
        runs = RunSupervisor(
            settings.db, store, settings.state_dir, settings.workers, settings.evaluator
        )
        marked = runs.recover()
        if marked:
            log.warning("runs left in flight by a previous server, now interrupted: %s", marked)
        state["s"] = _State(settings, store, queue, runs)
        logging.getLogger("uvicorn.access").addFilter(RedactTokens())
        reaper = asyncio.create_task(_reap_forever(runs))
        try:
            yield
        finally:
            reaper.cancel()
            await asyncio.to_thread(runs.close)
            queue.close()
            store.close()

    app = FastAPI(
        title="Knight",
        version=knight.__version__,
        description="Judge accelerator kernels and run optimisations over HTTP (docs/service.md).",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    _install_error_handlers(app)

    def st() -> _State:
        return state["s"]

    def bearer(authorization: Annotated[str | None, Header()] = None) -> str:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(401, "a bearer token is required", {"WWW-Authenticate": "Bearer"})
        scope = settings.tokens.scope_of(token.strip())
        if scope is None:
            raise HTTPException(401, "unknown token", {"WWW-Authenticate": "Bearer"})
        return scope

    def page_reader(
        authorization: Annotated[str | None, Header()] = None,
        token: Annotated[str | None, Query(description="Token, for browsers (pages only).")] = None,
    ) -> str:
        # A browser cannot send a bearer header when following a link: pages also take ?token=.
        return bearer(authorization if token is None else f"Bearer {token}")

    def read_write(scope: Annotated[str, Depends(bearer)]) -> str:
        if scope != "rw":
            raise HTTPException(
                403, "this token is read-only; evaluations and runs need an rw token"
            )
        return scope

    ro = [Depends(bearer)]
    rw = [Depends(read_write)]

    # ------------------------------------------------------------------ health, metrics, listings

    @app.get("/v1/health", response_model=Health, tags=["service"])
    def health() -> Health:
        """Liveness and the problem versions this server judges (no token needed)."""
        return Health(
            version=knight.__version__, problems={k: p.hash for k, p in st().queue.problems.items()}
        )

    @app.get("/metrics", dependencies=ro, response_class=PlainTextResponse, tags=["service"])
    def metrics() -> str:
        """Prometheus text format: queue depth, evaluations in flight, evaluation seconds, runs."""
        return _metrics_text(st())

    @app.get("/v1/problems", dependencies=ro, tags=["listings"])
    def problems() -> list[dict[str, Any]]:
        """The problems this server holds, with their versions and visible workloads."""
        return [
            {
                "id": p.id,
                "title": p.spec.title,
                "hash": p.hash,
                "machine": p.spec.machine,
                "workloads": [w.model_dump() for w in p.spec.workloads + p.spec.adversarial],
            }
            for p in st().queue.problems.values()
        ]

    @app.get("/v1/machines", dependencies=ro, tags=["listings"])
    def machines() -> list[dict[str, Any]]:
        """The machine presets and their constants."""
        return [{**dataclasses.asdict(m), "hash": m.hash} for m in map(load_machine, PRESET_NAMES)]

    @app.get("/v1/skills", dependencies=ro, tags=["listings"])
    def skills() -> list[dict[str, Any]]:
        """The skill catalog: name, description, origin and status."""
        from knight.skills import load_skills

        return [
            {
                "name": k.name,
                "description": k.description,
                "origin": k.metadata.get("origin", ""),
                "status": k.metadata.get("status", ""),
            }
            for k in load_skills().values()
        ]

    # ------------------------------------------------------------------ evaluations

    @app.post(
        "/v1/evaluations",
        dependencies=rw,
        tags=["evaluations"],
        responses={202: {"model": EvaluationJob}, 409: {}, 413: {}, 429: {}, 504: {}},
    )
    async def evaluate(
        req: EvaluationRequest,
        wait: Annotated[
            bool, Query(description="Answer with the report (true) or 202 at once.")
        ] = True,
    ) -> Response:
        """Judge a kernel: the EvalReport (protocol §3), or 202 and a job to poll with wait=false."""
        s = st()
        job = s.queue.submit(req)
        if not wait:
            return JSONResponse(
                job.view().model_dump(mode="json"),
                status_code=202,
                headers={"Location": f"/v1/evaluations/{job.id}"},
            )
        if not await s.queue.wait(job, s.settings.request_timeout_s):
            raise HTTPException(
                504,
                f"the evaluation did not finish within "
                f"{s.settings.request_timeout_s:.0f} s; poll /v1/evaluations/{job.id}",
            )
        if job.status == "error":
            raise HTTPException(
                500 if job.error and job.error.startswith("internal") else 422, job.error
            )
        return JSONResponse(job.report)

    @app.get(
        "/v1/evaluations/{job_id}",
        dependencies=ro,
        response_model=EvaluationJob,
        tags=["evaluations"],
    )
    async def evaluation(
        job_id: str,
        wait: Annotated[
            float, Query(ge=0, le=60, description="Long-poll up to this many seconds.")
        ] = 0,
    ) -> EvaluationJob:
        """A submitted evaluation: queued, running, done (with its report) or error."""
        job = st().queue.get(job_id)
        if job is None:
            raise HTTPException(
                404, f"no evaluation {job_id} (unknown, forgotten or the server restarted)"
            )
        if wait:
            await st().queue.wait(job, wait)
        return job.view()

    # ------------------------------------------------------------------ runs

    def run_info(run_id: int) -> RunView:
        s = st()
        item = history.runs(s.store, run_id)[0]
        managed = s.runs.managed(run_id)
        log_path = s.runs.log_of(run_id)
        return RunView(**item, managed=managed, log=tail(log_path) if log_path else None)

    @app.post("/v1/runs", dependencies=rw, status_code=201, response_model=RunView, tags=["runs"])
    def start_run(req: RunRequest) -> RunView:
        """Start a run in the server; answers once it exists (after its baseline is judged)."""
        s = st()
        if req.problem not in s.queue.problems:
            raise Refused(404, f"unknown problem {req.problem!r}")
        if req.machine is not None and req.machine not in PRESET_NAMES:
            raise Refused(
                422, f"unknown machine {req.machine!r}; choose one of {', '.join(PRESET_NAMES)}"
            )
        return run_info(s.runs.start(req))

    @app.get("/v1/runs", dependencies=ro, response_model=list[RunView], tags=["runs"])
    def list_runs() -> list[RunView]:
        """Every run in the database."""
        s = st()
        return [RunView(**r, managed=s.runs.managed(r["run_id"])) for r in history.runs(s.store)]

    @app.get("/v1/runs/{run_id}", dependencies=ro, response_model=RunView, tags=["runs"])
    def get_run(run_id: int) -> RunView:
        """One run: status, budget, iterations so far, best score, and its log if this server runs it."""
        return run_info(run_id)

    @app.get("/v1/runs/{run_id}/iterations", dependencies=ro, tags=["runs"])
    def iterations(
        run_id: int,
        status: str | None = None,
        category: str | None = None,
        limit: Annotated[int | None, Query(ge=1)] = None,
    ) -> dict[str, Any]:
        """The run's history, as `knight history --json` prints it."""
        return history.run_history(
            st().store, run_id, status=status, category=category, limit=limit
        )

    @app.get("/v1/runs/{run_id}/iterations/{number}", dependencies=ro, tags=["runs"])
    def iteration(run_id: int, number: int) -> dict[str, Any]:
        """One iteration in full, as `knight show --json` prints it."""
        return history.iteration(st().store, run_id, number)

    @app.post("/v1/runs/{run_id}/cancel", dependencies=rw, response_model=RunView, tags=["runs"])
    def cancel(run_id: int) -> RunView:
        """Interrupt a run this server is running (it can be resumed)."""
        s = st()
        history.runs(s.store, run_id)  # 404 first
        if not s.runs.cancel(run_id):
            raise Refused(409, f"run {run_id} is not running in this server")
        return run_info(run_id)

    @app.post(
        "/v1/runs/{run_id}/resume",
        dependencies=rw,
        status_code=202,
        response_model=RunView,
        tags=["runs"],
    )
    def resume(run_id: int, req: ResumeRequest | None = None) -> RunView:
        """Continue an interrupted run (or a finished one with a larger budget)."""
        s = st()
        s.runs.resume(run_id, req.budget if req else None)
        return run_info(run_id)

    @app.get("/v1/runs/{run_id}/replay", dependencies=rw, tags=["runs"])
    async def replay(run_id: int, to: Annotated[int | None, Query(ge=1)] = None) -> dict[str, Any]:
        """Rebuild the run's champion from the baseline, re-verifying every accepted step."""
        from knight.agent.replay import replay as replay_run

        s = st()
        item = (await asyncio.to_thread(history.runs, s.store, run_id))[0]
        problem = s.queue.problems.get(item["problem_id"])
        if problem is None:
            raise Refused(409, f"this server does not hold problem {item['problem']}")
        machine = item["machine"]

        def work(evaluator_for: Any) -> dict[str, Any]:
            result = replay_run(
                s.store, problem, evaluator_for(machine), run_id, to=to, machine=machine
            )
            return {**result.to_dict(), "final_source": result.final_source}

        return await asyncio.wrap_future(s.queue.call(work))

    @app.get(
        "/v1/runs/{run_id}/events", dependencies=ro, tags=["runs"], response_class=StreamingResponse
    )
    async def events(
        run_id: int,
        last_event_id: Annotated[int | None, Header()] = None,
    ) -> StreamingResponse:
        """Server-Sent Events: `iteration` per new iteration, `status` on changes, `end` when done."""
        s = st()
        await asyncio.to_thread(history.runs, s.store, run_id)  # 404 before streaming
        return StreamingResponse(
            _event_stream(s.store, run_id, last_event_id or 0),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    _include_live_report(app, [Depends(page_reader)], lambda: st().store)
    return app


async def _event_stream(store: RunStore, run_id: int, after: int) -> AsyncIterator[str]:
    """New iterations as they land in the database; ends once the run stops and all are sent."""
    status = None
    quiet = 0.0
    while True:
        items, now = await asyncio.to_thread(history.iterations_after, store, run_id, after)
        for item in items:
            after = item["number"]
            yield f"id: {after}\nevent: iteration\ndata: {json.dumps(item)}\n\n"
        if now != status:
            status = now
            yield f"event: status\ndata: {json.dumps({'run_id': run_id, 'status': now})}\n\n"
        if now != "running" and not items:
            yield f"event: end\ndata: {json.dumps({'run_id': run_id, 'status': now})}\n\n"
            return
        quiet = 0.0 if items else quiet + EVENT_POLL_S
        if quiet >= KEEPALIVE_S:
            quiet = 0.0
            yield ": keep-alive\n\n"
        await asyncio.sleep(EVENT_POLL_S)


async def _reap_forever(runs: RunSupervisor) -> None:
    while True:
        await asyncio.sleep(1.0)
        try:
            await asyncio.to_thread(runs.reap)
        except Exception:  # a locked database now and then must not stop the reaper
            log.exception("reaping finished runs failed")


def _metrics_text(s: _State) -> str:
    queued, running = s.queue.depth()
    st = s.queue.stats
    lines = [
        "# HELP knight_eval_queue_depth Evaluations waiting for the evaluation lane.",
        "# TYPE knight_eval_queue_depth gauge",
        f"knight_eval_queue_depth {queued}",
        "# HELP knight_evaluations_in_flight Evaluations being judged now.",
        "# TYPE knight_evaluations_in_flight gauge",
        f"knight_evaluations_in_flight {running}",
        "# HELP knight_evaluations_total Finished evaluations by outcome.",
        "# TYPE knight_evaluations_total counter",
        *[f'knight_evaluations_total{{outcome="{k}"}} {v}' for k, v in st.evaluations.items()],
        "# HELP knight_evaluation_seconds_total Wall seconds spent judging.",
        "# TYPE knight_evaluation_seconds_total counter",
        f"knight_evaluation_seconds_total {st.evaluation_seconds:.6f}",
        "# HELP knight_simulated_runs_total Simulations executed (cache misses).",
        "# TYPE knight_simulated_runs_total counter",
        f"knight_simulated_runs_total {st.simulated_runs}",
        "# HELP knight_cached_runs_total Runs answered by the run cache.",
        "# TYPE knight_cached_runs_total counter",
        f"knight_cached_runs_total {st.cached_runs}",
        "# HELP knight_evaluations_shared_total Requests that joined an identical evaluation in flight.",
        "# TYPE knight_evaluations_shared_total counter",
        f"knight_evaluations_shared_total {st.shared}",
        "# HELP knight_evaluations_refused_total Requests refused because the queue was full.",
        "# TYPE knight_evaluations_refused_total counter",
        f"knight_evaluations_refused_total {st.refused_full}",
        "# HELP knight_runs Runs in the database by status.",
        "# TYPE knight_runs gauge",
    ]
    by_status = history.runs_by_status(s.store)
    from knight.store import RUN_STATUSES

    lines += [f'knight_runs{{status="{k}"}} {by_status.get(k, 0)}' for k in RUN_STATUSES]
    return "\n".join(lines) + "\n"


def _install_error_handlers(app: FastAPI) -> None:
    """Every error is one JSON line `{"detail": ...}` with a status; never a traceback."""

    @app.exception_handler(Refused)
    async def refused(_: Request, e: Refused) -> JSONResponse:
        return JSONResponse({"detail": e.message}, status_code=e.status, headers=e.headers)

    @app.exception_handler(NotFoundError)
    async def not_found(_: Request, e: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=404)

    @app.exception_handler(KnightError)
    async def knight_error(_: Request, e: KnightError) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=422)

    @app.exception_handler(Exception)
    async def internal(_: Request, e: Exception) -> JSONResponse:
        log.error("internal error: %s", type(e).__name__)
        return JSONResponse(
            {"detail": f"internal server error ({type(e).__name__})"}, status_code=500
        )


def _include_live_report(app: FastAPI, dependencies: list[Any], store: Any) -> None:
    """Mount the live report pages of `knight.report` (`/runs/...`) when that package is there."""
    try:
        from knight.report.live import make_router  # optional: the report package may be absent
    except ImportError:
        return
    app.include_router(make_router(store), dependencies=dependencies)


class RedactTokens(logging.Filter):
    """Keeps `?token=...` (the report pages' way to authenticate a browser) out of access logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_QUERY.sub(r"\1<redacted>", a) if isinstance(a, str) else a
                for a in record.args
            )
        return True


_TOKEN_IN_QUERY = re.compile(r"((?:^|[?&])token=)[^&\s]*")
