"""The evaluator as a judge: baselines pass, every honeypot is rejected with its own category,
failures are attributed, runs are isolated, and nothing the kernel does can produce a score it
did not earn.

Honeypots live in tests/honeypots/ (one cheating attempt per file; the docstring names the trick
and, on a line `Expected: <category>`, the verdict). MODES below says how each one is judged.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from knight.blas import SINGLE_THREADED
from knight.evaluation import (
    HINTS,
    Category,
    EvalReport,
    FileCache,
    LocalEvaluator,
    MemoryCache,
    sandbox,
    stage_of,
)
from knight.evaluation import evaluator as evaluator_module
from knight.evaluation.pool import WorkerKind, WorkerPool, worker_env
from knight.evaluation.report import Failure, RunResult
from knight.evaluation.worker import TensorDecl, TraceRequest, TraceResult
from knight.problems import load_problem
from knight.source import source_hash

# The module's evaluators and cache (the MoE baseline's runs among them) are built once.
pytestmark = pytest.mark.xdist_group("evaluation")

ROOT = Path(__file__).resolve().parents[1]
HONEYPOTS = ROOT / "tests" / "honeypots"
MARK = "# judge: rejected here"

# How each honeypot is judged:
#   static     -- rejected before anything runs (isolated evaluator: no worker is ever started)
#   inprocess  -- runs in this process (isolate=False), every visible workload and seed
#   heldout    -- as inprocess, with the held-out workloads (heldout=True)
#   timeout    -- isolated, timeout_s=5, one workload and seed
#   memory     -- isolated, memory_mb=1500, one workload and seed
#   hashseed   -- isolated, a fresh one-worker pool (hash seed 1001; the re-run gets 1002)
MODES = {
    "hp_constant_output.py": "inprocess",
    "hp_dunder_escape.py": "static",
    "hp_dunder_import.py": "static",
    "hp_fstring_conversion.py": "static",
    "hp_fstring_format_spec.py": "static",
    "hp_hashseed_order.py": "hashseed",
    "hp_infinite_loop.py": "timeout",
    "hp_match_format_escape.py": "static",
    "hp_memory_bomb.py": "memory",
    "hp_module_cache.py": "static",
    "hp_mutable_default.py": "static",
    "hp_numpy_reference.py": "static",
    "hp_open_answer_file.py": "static",
    "hp_os_subprocess.py": "static",
    "hp_patch_simulator.py": "static",
    "hp_percent_format.py": "static",
    "hp_print_fake_result.py": "static",
    "hp_private_read.py": "static",
    "hp_runtime_internals.py": "static",
    "hp_skip_eps.py": "inprocess",
    "hp_socket_exfiltrate.py": "static",
    "hp_stale_output.py": "inprocess",
    "hp_str_builtin.py": "static",
    "hp_try_fallback.py": "static",
    "hp_visible_tokens_only.py": "heldout",
    "hp_write_into_input.py": "inprocess",
}


def _expected(path: Path) -> Category:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    m = re.search(r"^Expected: (\w+)", doc, re.M)
    assert m, (
        f"{path.name}: the docstring must name the expected category on a line 'Expected: <category>'"
    )
    return Category(m.group(1))


def _marked_line(source: str) -> int | None:
    lines = [i for i, line in enumerate(source.splitlines(), 1) if MARK in line]
    return lines[0] if lines else None


def _only(problem, *names: str):
    """The problem with only the named visible workloads (a cheaper judge for one behaviour)."""
    copy = load_problem(str(problem.root))
    copy.spec = problem.spec.model_copy(
        update={
            "workloads": [w for w in problem.spec.workloads if w.name in names],
            "adversarial": [],
        }
    )
    return copy


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cache():
    """One cache for the module: baseline runs are simulated once and reused by every test."""
    return MemoryCache()


@pytest.fixture(scope="module")
def rmsnorm():
    return load_problem("rmsnorm")


@pytest.fixture(scope="module")
def inproc(cache):
    with LocalEvaluator(isolate=False, cache=cache) as ev:
        yield ev


@pytest.fixture(scope="module")
def isolated(cache):
    with LocalEvaluator(isolate=True, cache=cache) as ev:
        yield ev


def _check_report(report: EvalReport, expected: Category) -> None:
    """Invariants of every rejection: typed, staged, hinted, and no score from a failed run."""
    assert report.status == "failed" and not report.ok
    f = report.failure
    assert f is not None, "a failed report carries its failure"
    assert f.category == expected, f.one_line()
    assert f.stage == stage_of(expected)
    assert f.hint == HINTS[expected]
    if f.stage in ("static", "trace", "run"):
        assert report.score_ns is None and report.speedup is None
    if f.stage == "static":
        assert report.simulated_runs == 0 and report.workloads == []
    # the report is the wire format: it survives a JSON round trip unchanged
    assert EvalReport.model_validate_json(report.model_dump_json()) == report


# ----------------------------------------------------------------------------- honeypots


def test_every_honeypot_is_registered_and_documented():
    files = sorted(p.name for p in HONEYPOTS.glob("*.py"))
    assert len(files) >= 12
    assert files == sorted(MODES), "add new honeypots to MODES (and remove deleted ones)"
    for name in files:
        path = HONEYPOTS / name
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and doc.startswith("Honeypot:"), (
            f"{name}: the docstring starts by naming the trick"
        )
        _expected(path)
        if MODES[name] == "static":
            assert _marked_line(path.read_text()), f"{name}: mark the rejected line with {MARK!r}"


@pytest.mark.parametrize("name", sorted(MODES))
def test_honeypot_is_rejected(name, rmsnorm, inproc, isolated, cache):
    path = HONEYPOTS / name
    source, expected, mode = path.read_text(), _expected(path), MODES[name]
    if mode == "static":
        report = isolated.evaluate(source, rmsnorm)
    elif mode == "inprocess":
        report = inproc.evaluate(source, rmsnorm)
    elif mode == "heldout":
        report = inproc.evaluate(source, rmsnorm, heldout=True)
    elif mode == "timeout":
        with LocalEvaluator(isolate=True, workers=1, timeout_s=2, cache=cache, max_seeds=1) as ev:
            report = ev.evaluate(source, _only(rmsnorm, "t1"), profile=False)
    elif mode == "memory":
        with LocalEvaluator(
            isolate=True, workers=1, memory_mb=1500, cache=cache, max_seeds=1
        ) as ev:
            report = ev.evaluate(source, _only(rmsnorm, "t1"), profile=False)
    elif mode == "hashseed":
        with LocalEvaluator(isolate=True, workers=1, cache=cache) as ev:
            report = ev.evaluate(source, rmsnorm)
    else:
        raise AssertionError(mode)
    _check_report(report, expected)
    f = report.failure
    if mode == "static":
        assert f.file == "kernel.py" and f.line == _marked_line(source), f.one_line()
        assert f.location() == f"kernel.py:{f.line}"
        assert f.details["violations"], "every violation is listed, not only the first"
    if expected == Category.timeout:
        assert "2 s" in f.message and report.workloads[0].latency_ns is None
    if expected == Category.heldout_failure:
        # correct on everything visible; the held-out verdict says how, never on what
        assert all(w.correct for w in report.workloads if not w.heldout)
        assert f.details["underlying"] == "mismatch_partial"
        assert f.workload is None and f.seed is None
        assert not any(w.name in f.message for w in rmsnorm.spec.heldout)
    if expected == Category.input_independent:
        assert f.workload == "t1" and report.integrity["input_dependent"] is False
    if name == "hp_write_into_input.py":
        assert "writes the kernel input 'x'" in f.message and f.line is not None
    if expected == Category.nondeterministic:
        assert report.integrity["deterministic"] is False
        assert all(w.correct for w in report.workloads), "every regular run was bit-exact"


def test_hashseed_honeypot_really_depends_on_the_hash_seed():
    """The premise of the nondeterminism honeypot: the set order differs between the seed of the
    first worker of a fresh pool and the seed of the re-run's fresh worker."""
    tree = ast.parse((HONEYPOTS / "hp_hashseed_order.py").read_text())
    factors = next(
        ast.literal_eval(n.value)
        for n in tree.body
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "FACTORS"
    )
    code = f"print([f for f in {set(factors)!r}][0])"  # the child builds the set: its own order
    first = {
        seed: subprocess.run(
            [sys.executable, "-c", code],
            env=worker_env(seed),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in (1001, 1002)
    }
    assert first[1001] == "normalise" and first[1002] != "normalise", first


def test_input_write_leaves_later_runs_intact(rmsnorm, inproc):
    """Inputs are shared read-only with every run: after a kernel tried to write into x, a
    (distinct) honest kernel on the same inputs in the same process is still exact."""
    bad = inproc.evaluate((HONEYPOTS / "hp_write_into_input.py").read_text(), rmsnorm)
    assert bad.failure.category == Category.illegal_access
    honest = inproc.evaluate(
        rmsnorm.baseline_source() + "\n# an honest twin with its own hash\n", rmsnorm
    )
    assert honest.ok, honest.failure and honest.failure.one_line()
    assert honest.simulated_runs > 0


def test_module_state_does_not_survive_between_runs(rmsnorm, inproc, isolated):
    """The static check cannot see every alias of module-level state (`memo = _STASH`), so the
    real guarantee is that every run executes the kernel source in a fresh namespace. This kernel
    copies a stashed output view instead of computing whenever its stash is non-empty: were the
    stash to survive from one run to the next, it would copy a stale (or foreign) tensor."""
    source = rmsnorm.baseline_source().replace(
        "def rmsnorm(x, gamma, out):\n    T = x.shape[0]\n",
        "_STASH = []\n\n\ndef rmsnorm(x, gamma, out):\n    T = x.shape[0]\n    memo = _STASH\n"
        "    if memo:\n        nisa.dma_copy(dst=out, src=memo[0])\n        return\n    memo.append(out)\n",
    )
    assert "memo.append(out)" in source
    for ev in (inproc, isolated):
        report = ev.evaluate(source, rmsnorm)
        assert report.ok, report.failure and report.failure.one_line()


# ----------------------------------------------------------------------------- baselines


@pytest.mark.parametrize("problem_id", ["rmsnorm", "moe_router"])
def test_baseline_is_ok(problem_id, inproc):
    problem = load_problem(problem_id)
    report = inproc.evaluate(problem.baseline_source(), problem, heldout=True)
    assert report.ok, report.failure and report.failure.one_line()
    assert report.failure is None and report.score_ns and report.speedup == pytest.approx(1.0)
    assert report.integrity == {
        "inputs_unchanged": True,
        "input_dependent": True,
        "above_floor": True,
        "deterministic": True,
        "heldout": True,
    }
    assert {w.name for w in report.workloads} == {
        w.name for w in problem.all_workloads(heldout=True)
    }
    assert all(w.correct and w.latency_ns >= w.floor_ns for w in report.workloads)


@pytest.fixture(scope="module")
def moe(cache):
    """moe_decode judged in worker processes, one seed per workload (each run simulates the
    layer)."""
    problem = load_problem("moe_decode")
    with LocalEvaluator(isolate=True, cache=cache, max_seeds=1) as ev:
        yield problem, ev


@pytest.mark.slow
def test_moe_decode_reversed_expert_sum_is_rounding(moe):
    """Summing the 8 experts in reverse slot order is correct maths with another rounding order:
    mismatch_rounding, with the share of elements, where, and the precision skill."""
    problem, ev = moe
    source = problem.baseline_source()
    reversed_sum = source.replace(
        "        for k in range(K):\n            slot",
        "        for k in reversed(range(K)):\n            slot",
    ).replace(
        "            if k == 0:\n                nisa.tensor_copy(acc, scaled)",
        "            if k == K - 1:\n                nisa.tensor_copy(acc, scaled)",
    )
    assert reversed_sum.count("reversed(range(K))") == 1 and "if k == K - 1:" in reversed_sum
    report = ev.evaluate(reversed_sum, _only(problem, "t1", "t2_edge"), profile=False)
    _check_report(report, Category.mismatch_rounding)
    f = report.failure
    assert f.hint == "precision-alignment"
    assert 0 < f.details["differing_share"] < 1
    assert f.details["differing_elements"] < f.details["total_elements"]
    assert "%" in f.message and "order" in f.message
    assert f.details["max_error_in_output_ulps"] <= 4
    assert f.details["tokens"] and f.details["experts"] and f.details["cores"]


# ----------------------------------------------------------------------------- attribution


def _edit(source: str, old: str, new: str) -> str:
    assert source.count(old) == 1, old
    return source.replace(old, new)


def test_unwritten_columns_are_mismatch_partial(rmsnorm, inproc):
    source = _edit(
        rmsnorm.baseline_source(),
        "for c0 in range(0, H, COLS_PER_TILE):",
        "for c0 in range(0, H // 2, COLS_PER_TILE):",
    )
    report = inproc.evaluate(source, rmsnorm)
    _check_report(report, Category.mismatch_partial)
    f = report.failure
    assert f.details["column_ranges"] == [[1024, 2048]]
    assert f.details["unwritten_elements"] == f.details["differing_elements"]
    assert "never written" in f.message


def test_overflow_to_inf_is_nan_or_inf(rmsnorm, inproc):
    source = _edit(
        rmsnorm.baseline_source(),
        "nisa.tensor_scalar(y[:, cols], xt[:, cols], nl.multiply, rstd, engine=scale_engine)",
        "nisa.tensor_scalar(y[:, cols], xt[:, cols], nl.multiply, rstd, op1=nl.multiply, operand1=1e38,"
        " engine=scale_engine)",
    )
    report = inproc.evaluate(source, rmsnorm)
    _check_report(report, Category.nan_or_inf)
    assert "NaN or inf" in report.failure.message


def test_forbidden_construct_reports_file_and_line(rmsnorm, inproc):
    lines = rmsnorm.baseline_source().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("def rmsnorm"))
    lines[at + 1 : at + 1] = ["    import os", "    os.getcwd()"]
    report = inproc.evaluate("\n".join(lines) + "\n", rmsnorm)
    _check_report(report, Category.forbidden_construct)
    f = report.failure
    assert (f.file, f.line) == ("kernel.py", at + 2)
    assert f"kernel.py:{at + 2}" in f.one_line() and "os" in f.message
    assert [v["line"] for v in f.details["violations"]] == [at + 2, at + 3]


def test_syntax_error_reports_line(rmsnorm, inproc):
    source = _edit(rmsnorm.baseline_source(), "    T = x.shape[0]\n", "    T = x.shape[0\n")
    report = inproc.evaluate(source, rmsnorm)
    _check_report(report, Category.syntax_error)
    assert report.failure.file == "kernel.py" and report.failure.line


@pytest.mark.parametrize(
    "source",
    [
        "X = 1" + " + 1" * 100_000 + "\n",  # deeper than the AST visitor's recursion
        "def rmsnorm(x, gamma, out):\n    return " + "-" * 100_000 + "1\n",  # the parser runs out
        "NAME = 'caf\udce9'\n",  # a lone surrogate: not UTF-8 text, cannot even be hashed as is
    ],
    ids=["deep-expression", "deep-unary", "surrogate"],
)
def test_pathological_source_is_a_syntax_error_not_a_crash(source, rmsnorm, inproc):
    report = inproc.evaluate(source, rmsnorm)
    _check_report(report, Category.syntax_error)


def test_what_runs_is_what_is_hashed(rmsnorm, cache):
    """The cache key is the hash of the canonical source (trailing whitespace stripped), so the
    evaluator must run the canonical source: otherwise two texts with one key -- here a string
    literal whose trailing spaces switch the kernel to a wrong path -- would share verdicts, and
    the verdict of the second would depend on which one was judged first."""
    honest = rmsnorm.baseline_source().replace(
        "EPS = 1e-6  # rms_norm_eps", 'EPS = 1e-6  # rms_norm_eps\nMODE = """\nexact\n"""'
    )
    assert honest != rmsnorm.baseline_source()
    honest = _edit(
        honest, "    T = x.shape[0]\n", "    T = x.shape[0]\n    if len(MODE) > 7:\n        T = 1\n"
    )
    twin = honest.replace("\nexact\n", "\nexact   \n")
    assert source_hash(twin) == source_hash(honest) and twin != honest
    cold = LocalEvaluator(isolate=False, cache=MemoryCache()).evaluate(twin, rmsnorm)
    warm_ev = LocalEvaluator(isolate=False, cache=MemoryCache())
    warm_ev.evaluate(honest, rmsnorm)
    warm = warm_ev.evaluate(twin, rmsnorm)
    assert cold.status == warm.status == "ok"
    assert cold.candidate_hash == warm.candidate_hash == source_hash(honest)


# ----------------------------------------------------------------------------- cache


def test_unchanged_candidate_hits_the_cache(rmsnorm, tmp_path):
    source = rmsnorm.baseline_source().replace("COLS_PER_TILE = 512", "COLS_PER_TILE = 1024")
    assert source != rmsnorm.baseline_source()
    with LocalEvaluator(isolate=False, cache=MemoryCache(), reference_cache=tmp_path) as ev:
        first = ev.evaluate(source, rmsnorm)
        second = ev.evaluate(source, rmsnorm)
    runs = sum(len(w.seeds) for w in rmsnorm.all_workloads())
    assert first.ok and first.simulated_runs == 2 * runs, "the baseline's and the candidate's"
    assert second.simulated_runs == 0, "no simulation runs for an unchanged candidate"
    assert second.cached_runs == first.simulated_runs
    assert second.score_ns == first.score_ns and second.harness == first.harness
    assert second.candidate_hash == first.candidate_hash


def test_file_cache_survives_processes_but_not_machine_failures(tmp_path, rmsnorm):
    cache = FileCache(tmp_path)
    with LocalEvaluator(isolate=False, cache=cache) as ev:
        first = ev.evaluate(rmsnorm.baseline_source(), rmsnorm)
    with LocalEvaluator(isolate=False, cache=FileCache(tmp_path)) as ev:
        again = ev.evaluate(rmsnorm.baseline_source(), rmsnorm)
    assert first.ok and again.ok and again.simulated_runs == 0 and again.score_ns == first.score_ns
    for c in (cache, MemoryCache()):
        for category in ("timeout", "memory_limit", "worker_crash"):
            failed = RunResult(
                workload="t1",
                seed=7,
                ok=False,
                failure=Failure(category=category, message="hiccup", workload="t1", seed=7),
            )
            c.put("cand", "harness", failed)
            assert c.get("cand", "harness", "t1", 7) is None, (
                f"{category} must never stick to a candidate"
            )


# ----------------------------------------------------------------------------- isolation


def test_worker_env_has_no_secrets(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    monkeypatch.setenv("GITHUB_TOKEN", "gh-secret")
    env = worker_env(1)
    assert (
        "ANTHROPIC_API_KEY" not in env
        and "AWS_SECRET_ACCESS_KEY" not in env
        and "GITHUB_TOKEN" not in env
    )
    assert not any("secret" in v for v in env.values())
    assert env["PYTHONHASHSEED"] == "1" and env["OPENBLAS_NUM_THREADS"] == "1"
    assert env["PYDANTIC_DISABLE_PLUGINS"] == "__all__"  # no other package's code beside kernels


BLAS_THREADS_SNIPPET = """
import os, sys
from knight.cli import main
sys.argv = ["knight", "--version"]
try:
    main()
except SystemExit:
    pass
import numpy  # loaded after the entry point, as every command loads it

print(os.environ.get("OPENBLAS_NUM_THREADS"), len(os.listdir("/proc/self/task")))
"""


# Without a preset, one thread in all (OpenBLAS would add one per core); a preset is kept as is.
@pytest.mark.parametrize(("preset", "expected"), [(None, "1 1"), ("2", "2")])
def test_knight_runs_blas_on_one_thread_unless_the_user_names_a_count(preset, expected):
    """OpenBLAS would start a thread per core in every Knight process, spinning beside the workers
    that already use every core; a count the user sets is kept."""
    env = {k: v for k, v in os.environ.items() if k not in SINGLE_THREADED}
    if preset is not None:
        env["OPENBLAS_NUM_THREADS"] = preset
    proc = subprocess.run(
        [sys.executable, "-c", BLAS_THREADS_SNIPPET], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    setting, threads = proc.stdout.split("\n")[-2].split()
    assert (setting if preset else f"{setting} {threads}") == expected


def _raw_trace(problem, source: str, workload: str = "t1") -> TraceRequest:
    """A request straight to a tracer: no static check, as if a kernel had slipped past it."""
    w = problem.workload(workload)
    decls = {
        n: TensorDecl(shape=list(shape), dtype=str(dt))
        for n, (shape, dt) in problem.input_specs(w).items()
    }
    outs = {
        n: TensorDecl(shape=list(shape), dtype=str(dt))
        for n, (shape, dt) in problem.output_specs(w).items()
    }
    return TraceRequest(
        source=source,
        entry=problem.spec.entry,
        inputs=decls,
        outputs=outs,
        machine="trn2",
        grid=problem.spec.grid,
    )


def test_worker_process_sees_no_api_key_and_cannot_forge_its_answer(monkeypatch, rmsnorm):
    """Defence in depth below the static check: even a kernel that may import os finds no API key
    in its environment, and what it prints cannot pose as the worker's answer."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret")
    forged = TraceResult(ok=True, call_log="{}").model_dump_json()
    source = (
        "import os, sys\n"
        f"print({forged!r})\n"
        f"sys.stdout.write({forged!r} + '\\n')\n"
        "def rmsnorm(x, gamma, out):\n"
        "    raise RuntimeError('key=%r home=%s' % (os.environ.get('ANTHROPIC_API_KEY'), os.environ.get('HOME')))\n"
    )
    pool = WorkerPool(1, timeout_s=30)
    try:
        [result] = pool.run_many(
            WorkerKind("trace", 1001), [_raw_trace(rmsnorm, source)], TraceResult
        )
    finally:
        pool.close()
    assert not result.ok and result.call_log is None
    assert result.failure.category == Category.kernel_exception
    home = (
        "home=/tmp" if sandbox.mode() == "bwrap" else "knight-worker-"
    )  # the sandbox's private /tmp
    assert "key=None" in result.failure.message and home in result.failure.message


_KILLED_PARENT = """
import os, signal
from knight.evaluation.pool import Worker, WorkerKind
Worker(WorkerKind("trace", 1001), 0, 1001)
os.kill(os.getpid(), signal.SIGKILL)  # no close, no atexit: the worker outlives its parent
"""


@pytest.mark.parametrize("mode", ["none", "bwrap"])
def test_a_parent_killed_outright_leaves_no_worker_folder(tmp_path, mode):
    """A run killed with SIGKILL (out of memory, a lost machine) leaves nothing in the temporary
    folder: the worker ends on the closed channel and removes its own scratch folder."""
    if mode == "bwrap" and sandbox.mode() != "bwrap":
        pytest.skip("bubblewrap cannot create namespaces here")
    env = {**os.environ, "TMPDIR": str(tmp_path), "KNIGHT_SANDBOX": mode}
    proc = subprocess.run([sys.executable, "-c", _KILLED_PARENT], env=env, timeout=60)
    assert proc.returncode == -9
    for _ in range(300):  # the orphaned worker still has to start, read EOF and exit
        if not list(tmp_path.glob("knight-worker-*")):
            break
        time.sleep(0.05)
    assert not list(tmp_path.glob("knight-worker-*"))


def test_one_timeout_decides_the_verdict_without_running_the_rest(rmsnorm, cache):
    """An endless kernel costs one wall-clock limit, not one per workload shape: after the first
    timeout the candidate's other traces are not started, and they say so."""
    source = (HONEYPOTS / "hp_infinite_loop.py").read_text()
    with LocalEvaluator(isolate=True, workers=1, timeout_s=2, cache=cache, max_seeds=1) as ev:
        report = ev.evaluate(source, rmsnorm, profile=False)
    _check_report(report, Category.timeout)
    messages = [w.failure.message for w in report.workloads if w.failure is not None]
    assert len(messages) == len(report.workloads) >= 3
    ran = [m for m in messages if "was not run" not in m]
    assert len(ran) == 1 and "wall-clock limit" in ran[0]
    assert all("wall-clock limit on" in m for m in messages if m not in ran)


@pytest.mark.parametrize(
    "crash",
    [
        "import os\nos._exit(3)\n",
        "import ctypes\nctypes.string_at(0)\n",
    ],
    ids=["exit", "segfault"],
)
def test_a_crash_never_produces_a_score(crash, monkeypatch, rmsnorm, cache):
    """A worker that dies mid-run is a typed failure without a score, whatever the kernel did
    (the static check is switched off here so that the kernel can reach the process)."""
    monkeypatch.setattr(evaluator_module, "_static_failure", lambda source, filename: None)
    with LocalEvaluator(isolate=True, workers=1, cache=cache) as ev:
        report = ev.evaluate(crash, _only(rmsnorm, "t1"), profile=False)
        assert ev.pool is not None
        idle = ev.pool._idle  # executors started ahead of the traces may wait there, unused
        assert all(w.alive and w.kind.role == "execute" for w in idle), "no dead worker is reused"
    _check_report(report, Category.worker_crash)
    assert report.workloads and all(
        w.latency_ns is None and not w.correct for w in report.workloads
    )


def _cli_eval(tmp_path, honeypot: str) -> subprocess.CompletedProcess:
    kernel = tmp_path / "kernel.py"
    kernel.write_text((HONEYPOTS / honeypot).read_text())
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "knight.cli",
            "eval",
            str(kernel),
            "--problem",
            "rmsnorm",
            "--json",
            "--no-cache",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def test_cli_eval_reports_a_honeypot_as_failed(tmp_path):
    """`knight eval --json`: the report on stdout, exit code 1 for a failed report (DESIGN.md)."""
    proc = _cli_eval(tmp_path, "hp_constant_output.py")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["status"] == "failed" and report["failure"]["category"] == "input_independent"
    assert report["failure"]["hint"] == "kernel-rules" and report["failure"]["stage"] == "integrity"
    assert proc.returncode == 1, "a failed report must not exit 0 (CI scripts check the exit code)"


# ----------------------------------------------------------------------------- the protocol document


def test_protocol_doc_covers_the_taxonomy_and_every_report_field():
    """docs/evaluator-protocol.md is the contract for other implementations: every category with
    its stage and hint, and every field of the four report models."""
    from knight.evaluation import WorkloadReport

    doc = (ROOT / "docs" / "evaluator-protocol.md").read_text()
    rows = {
        m.group(2): (m.group(1), m.group(3))
        for m in re.finditer(r"^\| (\w+) \| `(\w+)` \| [^|]+ \| (?:`([\w-]+)`|—) \|$", doc, re.M)
    }
    for cat in Category:
        assert cat.value in rows, f"{cat.value} is missing from the taxonomy table"
        stage, hint = rows[cat.value]
        assert stage == stage_of(cat) and hint == HINTS.get(cat), cat.value
    for model in (EvalReport, WorkloadReport, Failure, RunResult):
        for field in model.model_fields:
            assert f"`{field}`" in doc, f"{model.__name__}.{field} is not documented"
    for step in (
        "Static checks",
        "Runs",
        "Failures",
        "Input mutation",
        "Input independence",
        "Bit-exact comparison",
        "Physical floor",
        "Determinism re-trace",
        "Held-out",
    ):
        assert f"**{step}" in doc, step
