"""`knight report` and the live run pages: built from real runs, looked at in headless Chromium."""

from __future__ import annotations

import json
import re
import time
from html import unescape
from pathlib import Path

import pytest
from browser import Browser, chromium_path
from cli_runner import knight, knight_here
from knight_server import Server

from knight.agent.context import workload_views
from knight.problems import load_problem
from knight.proposers import prompt
from knight.report import charts
from knight.report.model import SCORE_LABEL, SCORE_MEANING, IterationView, ModelUsage, RunView
from knight.store.records import workload_outcomes

# The scripted run of the module fixture is made once: one xdist worker for the module.
pytestmark = pytest.mark.xdist_group("report")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DB = ROOT / "knight.db.example"
SCRIPT = ROOT / "tests" / "data" / "scripted_example.jsonl"
CHROMIUM = chromium_path()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (Debian: apt-get install -y chromium); the rendered-page checks need it",
)
# What the page must draw, counted in the browser after the scripts ran.
RENDERED = """JSON.stringify({
  svgs: document.querySelectorAll('svg.chart').length,
  speedupPoints: document.querySelectorAll('svg.speedup circle').length,
  lineageNodes: document.querySelectorAll('svg.lineage circle').length,
  timelines: document.querySelectorAll('svg.timeline rect').length,
  iterations: document.querySelectorAll('details.iteration').length,
  width: document.querySelector('svg.speedup') ? document.querySelector('svg.speedup').getBoundingClientRect().width : 0
})"""


@pytest.fixture(scope="module")
def scripted_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A database holding a real two-iteration run of the scripted proposer on rmsnorm."""
    where = tmp_path_factory.mktemp("scripted")
    db = where / "k.db"
    done = knight(
        "run",
        "--db",
        str(db),
        "--problem",
        "rmsnorm",
        "--proposer",
        "scripted",
        "--script",
        str(SCRIPT),
        "--budget",
        "2",
        "--workers",
        "1",
        "--json",
        cwd=where,
    )
    assert done.returncode == 0, done.stderr
    return db


def test_report_cli_writes_a_self_contained_page(scripted_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    done = knight_here(
        "report",
        "--db",
        str(scripted_db),
        "--out",
        str(out),
        "--no-timelines",
        "--json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["runs"][0]["iterations"] == 2 and summary["bytes"] == len(out.read_bytes())
    html = out.read_text()
    # Self-contained: no external script, style, image or font; nothing to fetch.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<script src" not in html and not re.search(r"url\(\s*['\"]?(https?:)?//", html)
    # Units say what they are: the score is named as the weighted geometric mean, next to workloads.
    assert SCORE_LABEL in html and "evaluation per workload" in html.lower()
    assert html.count('<details class="iteration"') == 2
    visible = unescape(re.sub(r"<[^>]+>", "", html))
    assert "+COLS_PER_TILE = 2048" in visible  # the diff of iteration 2, highlighted but verbatim
    # The same inputs give the same page.
    again = tmp_path / "again.html"
    assert (
        knight_here(
            "report", "--db", str(scripted_db), "--out", str(again), "--no-timelines", cwd=tmp_path
        ).returncode
        == 0
    )
    assert again.read_text() == html


def test_report_cli_errors_are_one_line(scripted_db: Path, tmp_path: Path) -> None:
    missing_run = knight_here(
        "report",
        "--db",
        str(scripted_db),
        "--run",
        "42",
        "--out",
        str(tmp_path / "r.html"),
        cwd=tmp_path,
    )
    assert missing_run.returncode == 1 and missing_run.stderr.strip() == "error: run 42 not found"
    no_dir = knight_here(
        "report",
        "--db",
        str(scripted_db),
        "--out",
        str(tmp_path / "nowhere" / "r.html"),
        cwd=tmp_path,
    )
    assert no_dir.returncode == 2 and len(no_dir.stderr.strip().splitlines()) == 1
    no_db = knight_here("report", "--db", str(tmp_path / "absent.db"), cwd=tmp_path)
    assert no_db.returncode == 1 and "Traceback" not in no_db.stderr
    assert not (tmp_path / "absent.db").exists()


def test_score_is_labelled_next_to_the_workload_latencies_in_the_cli(
    scripted_db: Path, tmp_path: Path
) -> None:
    """history, show and the run summary say what "score" is and show the per-workload latencies."""
    history = knight_here("history", "--db", str(scripted_db), cwd=tmp_path)
    assert history.returncode == 0, history.stderr
    lines = history.stdout.splitlines()
    assert SCORE_MEANING in lines[0] and "score µs" in lines[1]
    assert max(len(line) for line in lines) <= 100
    show = knight_here("show", "2", "--db", str(scripted_db), cwd=tmp_path)
    assert show.returncode == 0, show.stderr
    text = show.stdout
    assert f"{SCORE_LABEL}: " in text
    table = text[text.index("workloads (the score weighs these):") :].splitlines()
    assert table[1].split() == ["workload", "weight", "latency", "µs", "baseline", "µs", "speed-up", "correct"]  # fmt: skip
    first = table[2].split()
    assert first[0] == "t1" and float(first[2]) > 0 and first[4].endswith("x")
    db = tmp_path / "k.db"
    run = knight(
        "run", "--db", str(db), "--problem", "rmsnorm", "--proposer", "scripted",
        "--script", str(SCRIPT), "--budget", "2", "--workers", "1", cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    said = run.stdout.splitlines()
    assert "best score" in said[0] and "baseline score" in said[0]
    assert f"score = {SCORE_MEANING}" in said[0]
    assert said[1].startswith("per workload (champion/baseline µs): t1 ")


def test_prompt_names_the_resource_that_sets_each_workload_floor() -> None:
    """The proposer sees each workload's floor with its binding resource (HBM or an engine)."""
    report = {
        "workloads": [
            {"name": "t1", "latency_ns": 4000.0, "correct": True, "floor_ns": 1000.0,
             "floor_bound": "tensor"},
            {"name": "held", "heldout": True, "latency_ns": 1.0, "correct": True},
        ]
    }  # fmt: skip
    problem = load_problem("rmsnorm")
    outcomes = workload_outcomes(report)
    assert [(o.name, o.floor_ns, o.floor_bound) for o in outcomes] == [("t1", 1000.0, "tensor")]
    view = next(v for v in workload_views(problem, outcomes) if v.name == "t1")
    line = prompt.workload_line(view, worst=None)
    assert line.startswith(
        "- t1 (weight 0.5): 4,000 ns; floor 1,000 ns, tensor-bound (25% of roofline)"
    )
    assert "compute-aware" in prompt.RULES and "at that engine's peak" in prompt.RULES


def _tree_run() -> RunView:
    """A run shaped like a beam search: two children of the baseline, one of them grows on."""

    def it(number: int, status: str, parent: int | None, speedup: float | None) -> IterationView:
        return IterationView(
            number=number,
            status=status,
            parent_number=parent,
            speedup_vs_baseline=speedup,
            hypothesis=f"idea {number}",
            parent_hash="p",
            category=None
            if status == "accepted"
            else "no_gain"
            if status == "rejected"
            else "shape_error",
        )

    return RunView(
        id=7,
        problem="p",
        proposer="offline",
        machine="trn2",
        status="running",
        created_at="now",
        budget=5,
        seed=0,
        knight_version="0",
        baseline_hash="b" * 64,
        baseline_score_ns=100.0,
        best_score_ns=80.0,
        floor_score_ns=20.0,
        iterations=[
            it(1, "accepted", None, 1.1),
            it(2, "rejected", None, 1.0),
            it(3, "accepted", 1, 1.25),
            it(4, "failed", 3, None),
            it(5, "rejected", 3, 1.2),
        ],
    )


def test_lineage_is_a_tree_with_links_to_iterations() -> None:
    drawing = charts.lineage_tree(_tree_run())
    for number in range(1, 6):
        assert f'href="#run-7-it-{number}"' in drawing
    assert drawing.count("<circle") == 6  # the baseline and five iterations
    assert drawing.count("<polyline") == 5  # one edge per iteration to its parent


def test_usage_chart_stacks_tokens_and_plots_cost() -> None:
    run = _tree_run()
    assert "no model calls" in charts.usage_chart(run)
    run.iterations[0].usage = ModelUsage(
        calls=2, input_tokens=1200, output_tokens=300, cost_usd=0.02
    )
    run.iterations[2].usage = ModelUsage(
        calls=1, input_tokens=900, cache_read_tokens=5000, cost_usd=0.01
    )
    drawing = charts.usage_chart(run)
    assert drawing.count("<rect") - 5 == 4  # four token bars (the legend has five swatches)
    assert "#1: 1,200 input tokens" in drawing and "total $0.0300" in drawing


def test_speedup_chart_marks_every_candidate_and_the_floor() -> None:
    drawing = charts.speedup_chart(_tree_run())
    assert drawing.count("<circle") == 5  # failed iterations too, on the axis
    # The floor (5x) is far above the points: a note says where; the 25% line (1.25x) is drawn.
    assert "physical floor: 5x the baseline score (off the chart)" in drawing
    assert "the champion is at 25% of the roofline" in drawing and "25% of roofline" in drawing


@needs_chromium
def test_example_report_renders_in_chromium(tmp_path: Path) -> None:
    """`knight report --db knight.db.example` works offline, leaves the file as it was, and the
    browser draws every plot."""
    before = EXAMPLE_DB.read_bytes()
    out = tmp_path / "r.html"
    done = knight_here(
        "report",
        "--db",
        str(EXAMPLE_DB),
        "--out",
        str(out),
        "--workers",
        "1",
        "--json",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert EXAMPLE_DB.read_bytes() == before
    summary = json.loads(done.stdout)
    browser = Browser.launch(tmp_path, CHROMIUM)
    try:
        page = browser.page()
        page.goto(out.as_uri())
        page.pump(1.0)
        seen = json.loads(page.evaluate(RENDERED))
        shot = page.screenshot(tmp_path / "report.png")
    finally:
        browser.close()
    iterations = sum(r["iterations"] for r in summary["runs"])
    assert seen["iterations"] == iterations > 0
    assert seen["svgs"] >= 6 and seen["speedupPoints"] >= iterations
    assert seen["lineageNodes"] == iterations + len(summary["runs"])
    # Baseline and champion were profiled again by the evaluator and drawn as timelines.
    assert seen["timelines"] > 0 and summary["timelines"]
    assert seen["width"] > 300
    assert page.problems == []
    assert all(url.startswith(("file:", "data:")) for url in page.requests)
    assert shot.stat().st_size > 20_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


POINTS = "document.querySelectorAll('svg.speedup circle').length"


@needs_chromium
def test_knight_serve_shows_a_run_page_updating_as_iterations_arrive(tmp_path: Path) -> None:
    """A run started through the real `knight serve`: its page, open in the browser, gains a point
    per iteration as the run records it, without a reload; links keep the page's token."""
    home = tmp_path / "serve"
    home.mkdir()
    server = Server(home)
    browser = Browser.launch(tmp_path, CHROMIUM)
    try:
        script = [json.loads(line) for line in _proposal_lines(SCRIPT)]
        with server.client() as client:
            started = client.post(
                "/v1/runs",
                json={"problem": "rmsnorm", "budget": len(script), "proposer": "scripted",
                      "script": script},
            )  # fmt: skip
            assert started.status_code == 201, started.text
            run_id = started.json()["run_id"]
        token = f"?token={server.ro}"
        page = browser.page()
        page.goto(f"{server.url}/runs/{run_id}{token}")
        page.evaluate("window.knightStillTheSamePage = true")
        counts = [page.evaluate(POINTS)]
        page.screenshot(tmp_path / "serve-before.png")
        deadline = time.monotonic() + 300
        while counts[-1] < len(script):
            assert time.monotonic() < deadline, f"points seen: {counts}"
            page.pump(0.25)
            counts.append(page.evaluate(POINTS))
        # The page was open before the last iterations existed and grew as they arrived.
        assert counts[0] < len(script) and counts == sorted(counts), counts
        assert page.evaluate("window.knightStillTheSamePage === true")  # swapped, not reloaded
        assert page.evaluate(f"!!document.getElementById('run-{run_id}-it-{len(script)}')")
        page.wait_for(
            "document.getElementById('live-status').textContent.includes('finished')", timeout=60
        )
        hrefs = page.evaluate(
            "[...document.querySelectorAll('a')].map(a => a.getAttribute('href'))"
        )
        assert f"/runs/{run_id}/timelines{token}" in hrefs and f"/runs{token}" in hrefs
        page.screenshot(tmp_path / "serve-after.png")
        # Timelines are computed on request, by evaluator workers the server starts.
        with server.client(None) as anonymous:
            trace = anonymous.get(
                f"/runs/{run_id}/trace/champion.json", params={"token": server.ro}, timeout=300
            )
        assert trace.status_code == 200, trace.text
        assert any(
            e.get("ph") == "X" and e.get("cat") == "dma" for e in trace.json()["traceEvents"]
        )
        assert page.problems == []
    finally:
        browser.close()
        server.stop()


def _proposal_lines(path: Path) -> list[str]:
    """The proposal lines of a scripted proposer's JSONL file (no blank or comment lines)."""
    return [line for line in path.read_text().splitlines() if line.strip() and line[0] != "#"]
