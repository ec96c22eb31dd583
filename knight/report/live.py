"""The report's run pages served live (FastAPI): they update while a run progresses.

`make_router(database)` returns an `APIRouter` with
- `GET /runs`: the runs, each linking to its page;
- `GET /runs/{id}`: the same run section as `knight report`, plus a few lines of script that poll
  `/runs/{id}/state.json` and swap in `/runs/{id}/body` when an iteration lands;
- `GET /runs/{id}/state.json` (`RunState`), `GET /runs/{id}/report.json` (`RunView`);
- `GET /runs/{id}/timelines`: baseline vs champion profiled now, with both timelines, and
  `GET /runs/{id}/trace/{baseline|champion}.json`: their Perfetto traces.
Kernels are only ever run by the evaluator's isolated workers (`LocalProfilers` by default).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from html import escape

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse

from knight.errors import KnightError, NotFoundError
from knight.problems import load_problem
from knight.report.collect import load_run, run_ids, run_state
from knight.report.measure import (
    LocalProfilers,
    ProfilerFactory,
    evaluated_comparison,
    stored_comparison,
)
from knight.report.model import Comparison, KernelMeasurement, RunState, RunView
from knight.report.page import document, run_body, runs_index
from knight.store import Database, RunStore

TRACE_LABELS = ("baseline", "champion")

# Polls the state; when it changes, fetches the run body again and swaps it in. The page's query
# string (a token, say) is passed along. An ended run is checked less often (it may be resumed).
POLL_JS = """
(function(){var el=document.getElementById('run-body');var st=document.getElementById('live-status');
var version=el.dataset.version,qs=location.search,ms=parseInt(el.dataset.pollMs,10);
async function tick(){try{var r=await fetch(el.dataset.stateUrl+qs,{cache:'no-store'});
if(r.ok){var s=await r.json();if(s.version!==version){var b=await fetch(el.dataset.bodyUrl+qs,{cache:'no-store'});
if(b.ok){el.innerHTML=await b.text();version=s.version;el.dataset.version=version;}}
st.textContent=s.status+', '+s.iterations+' iteration'+(s.iterations===1?'':'s')+' (checked '+new Date().toLocaleTimeString()+')';
if(s.status!=='running'){setTimeout(tick,5*ms);return;}}}catch(e){st.textContent='waiting for the server ...';}
setTimeout(tick,ms);}
setTimeout(tick,ms);})();
"""


class _Timelines:
    """Evaluated comparisons, computed once per (run, champion) and kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: dict[tuple[int, str | None], Comparison] = {}

    def get(self, key: tuple[int, str | None], compute: Callable[[], Comparison]) -> Comparison:
        with self._lock:  # one computation at a time: they occupy the evaluator's workers
            if key not in self._done:
                self._done[key] = compute()
            return self._done[key]


StoreSource = RunStore | Database | Callable[[], RunStore | Database]


def _store_getter(source: StoreSource) -> Callable[[], RunStore]:
    """A function giving the store for each request (a callable source is asked every time)."""

    def as_store(value: RunStore | Database) -> RunStore:
        return value if isinstance(value, RunStore) else RunStore(value)

    if callable(source):
        return lambda: as_store(source())
    fixed = as_store(source)
    return lambda: fixed


def _link(request: Request, name: str, **params: object) -> str:
    """The path of route `name`, with this request's query string: a page opened with
    `?token=...` (how `knight serve` authenticates a browser) keeps it on every link."""
    path = request.url_for(name, **params).path
    return f"{path}?{request.url.query}" if request.url.query else path


def make_router(
    database: StoreSource,
    *,
    profiler_for: ProfilerFactory | None = None,
    poll_seconds: float = 2.0,
) -> APIRouter:
    """The live report pages over `database`: a `RunStore` (open it with `open_store(where,
    "read")`), a `Database`, or a callable returning either, asked on every request."""
    router = APIRouter(tags=["report"])
    db = _store_getter(database)
    profilers = profiler_for or LocalProfilers(workers=2)
    timelines = _Timelines()

    def view(run_id: int) -> RunView:
        try:
            return load_run(db(), run_id)
        except NotFoundError as error:
            raise HTTPException(404, str(error)) from None

    def body(request: Request, run: RunView) -> str:
        def trace_href(m: KernelMeasurement) -> str:
            return _link(request, "live_trace", run_id=run.id, label=m.label)

        timelines_href = _link(request, "live_timelines", run_id=run.id)
        return run_body(
            run, stored_comparison(run), trace_href=trace_href, timelines_href=timelines_href
        )

    def evaluated(run: RunView) -> Comparison:
        champion = run.champion_iteration()
        key = (run.id, champion.candidate_hash if champion else None)

        def compute() -> Comparison:
            try:
                problem = load_problem(run.problem)
            except KnightError as error:
                raise HTTPException(404, f"cannot profile run {run.id}: {error}") from None
            return evaluated_comparison(db(), run, problem, profilers(run.machine))

        return timelines.get(key, compute)

    @router.get("/runs", response_class=HTMLResponse, name="live_runs")
    def runs_page(request: Request) -> HTMLResponse:
        """Every run in the database, each linking to its live page."""
        views = [load_run(db(), run_id) for run_id in run_ids(db())]
        table = runs_index(views, link=lambda r: _link(request, "live_run", run_id=r.id))
        return HTMLResponse(document("Knight runs", f"<h1>Knight runs</h1>{table}"))

    @router.get("/runs/{run_id}", response_class=HTMLResponse, name="live_run")
    def run_page(request: Request, run_id: int) -> HTMLResponse:
        """One run's page; it refreshes itself while the run records iterations."""
        run = view(run_id)
        state = run_state(db(), run_id)
        attrs = (
            f'data-version="{state.version}" data-poll-ms="{int(poll_seconds * 1000)}" '
            f'data-state-url="{request.url_for("live_state", run_id=run_id).path}" '
            f'data-body-url="{request.url_for("live_body", run_id=run_id).path}"'
        )
        head = (
            f'<nav><a href="{escape(_link(request, "live_runs"))}">all runs</a></nav>'
            f'<p class="muted">live: <span id="live-status">{state.status}, {state.iterations} '
            f"iterations</span></p>"
        )
        page = f'{head}<div id="run-body" {attrs}>{body(request, run)}</div>'
        return HTMLResponse(document(f"Knight run {run_id}", page, POLL_JS))

    @router.get("/runs/{run_id}/body", response_class=HTMLResponse, name="live_body")
    def run_fragment(request: Request, run_id: int) -> HTMLResponse:
        """The run section alone, for the page's script to swap in."""
        return HTMLResponse(body(request, view(run_id)))

    @router.get("/runs/{run_id}/state.json", response_model=RunState, name="live_state")
    def state(run_id: int) -> RunState:
        """Status and iteration count; `version` changes whenever the page would."""
        try:
            return run_state(db(), run_id)
        except NotFoundError as error:
            raise HTTPException(404, str(error)) from None

    @router.get("/runs/{run_id}/report.json", response_model=RunView, name="live_report_json")
    def report_json(run_id: int) -> RunView:
        """Everything the run page shows, as data."""
        return view(run_id)

    @router.get("/runs/{run_id}/timelines", response_class=HTMLResponse, name="live_timelines")
    def timelines_page(request: Request, run_id: int) -> HTMLResponse:
        """Baseline and champion profiled now, with both timelines and their traces to download."""
        from knight.report.page import comparison_html

        run = view(run_id)
        comparison = evaluated(run)

        def trace_href(m: KernelMeasurement) -> str:
            return _link(request, "live_trace", run_id=run.id, label=m.label)

        back = _link(request, "live_run", run_id=run_id)
        html = (
            f'<nav><a href="{escape(back)}">run {run_id}</a></nav><h1>Run {run_id}: baseline vs champion</h1>'
            + comparison_html(run, comparison, trace_href=trace_href)
        )
        return HTMLResponse(document(f"Knight run {run_id}: timelines", html))

    @router.get("/runs/{run_id}/trace/{label}.json", name="live_trace")
    def trace(run_id: int, label: str) -> JSONResponse:
        """The Perfetto (Chrome Trace Event) JSON of the run's baseline or champion."""
        if label not in TRACE_LABELS:
            raise HTTPException(404, f"no trace {label!r}; choose {' or '.join(TRACE_LABELS)}")
        comparison = evaluated(view(run_id))
        measured = getattr(comparison, label)
        if measured is None or measured.trace is None:
            raise HTTPException(404, f"run {run_id} has no {label} trace")
        name = f"run{run_id}-{label}-{measured.candidate_hash[:12]}.perfetto.json"
        return JSONResponse(
            measured.trace,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    return router
