"""The data-free pipeline: kernels are traced where no data lives, call logs are replayed where it
does, forged logs buy nothing, determinism is checked per shape, answers survive hostile text,
and workers run in an OS sandbox.

Kernels that reach the process here (imports of gc, os, socket) are what an escape from the static
allowlist would look like; the static check is switched off for them so they reach the worker.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import shutil
import socket
import subprocess
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from cli_runner import knight_argv, knight_env, knight_here

from knight.evaluation import Category, LocalEvaluator, MemoryCache, sandbox
from knight.evaluation import evaluator as evaluator_module
from knight.evaluation.evaluator import CHECK_SEED, TRACE_SEED
from knight.evaluation.pool import WorkerKind, WorkerPool
from knight.evaluation.worker import TensorDecl, TraceRequest, TraceResult, trace_one
from knight.npu import nisa, nl
from knight.npu.calllog import CallLog, CallLogError
from knight.npu.errors import IllegalAccess, ResourceOverflow
from knight.npu.runtime import run, simulate, trace
from knight.npu.tensor import RegExpr, Tensor, View
from knight.problems import load_kernel, load_problem

ROOT = Path(__file__).resolve().parents[1]
HONEYPOTS = ROOT / "tests" / "honeypots"
F32 = np.float32


@pytest.fixture
def no_static_check(monkeypatch):
    monkeypatch.setattr(evaluator_module, "_static_failure", lambda source, filename: None)


@pytest.fixture(scope="module")
def rmsnorm():
    return load_problem("rmsnorm")


def _request(problem, source: str, workload: str = "t1") -> TraceRequest:
    w = problem.workload(workload)

    def decls(specs):
        return {n: TensorDecl(shape=list(shape), dtype=str(dt)) for n, (shape, dt) in specs.items()}

    return TraceRequest(
        source=source,
        entry=problem.spec.entry,
        inputs=decls(problem.input_specs(w)),
        outputs=decls(problem.output_specs(w)),
        machine="trn2",
        grid=problem.spec.grid,
    )


# ----------------------------------------------------------------------------- no data at trace time

SECRET_WORKLOAD = "wl_secret_5309"
SECRET_SEED = 7919131

# Walks every object the process can reach (gc, containers, frames) looking for the workload's
# name, its seed and the first bytes of its input `x`; the needles are built at run time so that
# the source text itself holds none of them.
PROBE = """
import gc
import sys

import numpy as np

NAME_REVERSED = {name_rev!r}
SEED_MINUS_ONE = {seed_m1}
X_HEX = {x_hex!r}


def rmsnorm(x, gamma, out):
    name = NAME_REVERSED[::-1]
    seed = SEED_MINUS_ONE + 1
    data = bytes.fromhex(X_HEX)
    found = set()

    def look(v):
        if type(v) is str and v == name and v is not name:
            found.add("workload")
        elif type(v) is int and v == seed and v is not seed:
            found.add("seed")
        elif isinstance(v, (bytes, bytearray)) and v is not data and data in v:
            found.add("input bytes")
        elif isinstance(v, np.ndarray):
            for a in (v, v.base):
                if isinstance(a, np.ndarray) and 0 < a.nbytes < (64 << 20) and data in a.tobytes():
                    found.add("input array")

    def deep(v, depth):
        try:
            look(v)
        except Exception:  # an object that refuses inspection (e.g. numpy's masked constant)
            return
        if depth and isinstance(v, dict):
            for k, w in list(v.items()):
                look(k)
                deep(w, depth - 1)
        elif depth and isinstance(v, (list, tuple, set, frozenset)):
            for w in list(v):
                deep(w, depth - 1)

    for o in gc.get_objects():
        try:
            deep(o, 1)
        except Exception:  # an object that refuses inspection
            pass
    f = sys._getframe()
    while f is not None:
        for v in list(f.f_locals.values()):
            deep(v, 3)
        f = f.f_back
    raise RuntimeError("found:" + ",".join(sorted(found)))
"""


def _secret_problem(tmp_path: Path):
    """rmsnorm with one visible workload of a distinctive name and seed."""
    root = tmp_path / "rmsnorm_secret"
    shutil.copytree(ROOT / "baselines" / "rmsnorm", root)
    toml = (root / "problem.toml").read_text()
    head, _, _ = toml.partition("[[workloads]]")
    (root / "problem.toml").write_text(
        head
        + f'[[workloads]]\nname = "{SECRET_WORKLOAD}"\nparams = {{ T = 4 }}\nseeds = [{SECRET_SEED}]\n'
    )
    return load_problem(str(root))


def _probe_source(problem) -> tuple[str, dict]:
    w = problem.workload(SECRET_WORKLOAD)
    inputs = problem.make_inputs(w, SECRET_SEED)
    src = PROBE.format(
        name_rev=SECRET_WORKLOAD[::-1],
        seed_m1=SECRET_SEED - 1,
        x_hex=inputs["x"].reshape(-1)[:32].tobytes().hex(),
    )
    return src, inputs


def test_the_probe_finds_data_where_data_is(tmp_path):
    """Control: traced in this process (which made the inputs and holds the workload), the probe
    finds all three, so an empty finding in the tracer process means something."""
    problem = _secret_problem(tmp_path)
    source, inputs = _probe_source(problem)
    res = trace_one(_request(problem, source, SECRET_WORKLOAD))
    assert inputs["x"].size and not res.ok
    assert res.failure.message == "RuntimeError: found:input array,seed,workload", (
        res.failure.message
    )


def test_the_tracer_process_holds_no_input_seed_or_workload(tmp_path, no_static_check):
    """A kernel that escapes every Python restriction at trace time (here: gc and frame walks)
    finds no input values, no seed and no workload name: the tracer was never given them."""
    problem = _secret_problem(tmp_path)
    source, _ = _probe_source(problem)
    with LocalEvaluator(
        isolate=True, workers=1, cache=MemoryCache(), input_cache=tmp_path / "inputs"
    ) as ev:
        report = ev.evaluate(source, problem, profile=False)
    f = report.failure
    assert f.category == Category.kernel_exception and f.stage == "trace", f.one_line()
    assert f.message == "RuntimeError: found:", f.message


# ----------------------------------------------------------------------------- forged call logs


def _copy_kernel(a, y):
    t = nl.ndarray((128, 512), dtype=nl.float32, name="tile")
    nisa.dma_copy(t, a)
    nisa.dma_copy(y, t)


def _load_all_store_half(a, y):
    t = nl.ndarray((128, 512), dtype=nl.float32, name="tile")
    nisa.dma_copy(t, a)
    nisa.dma_copy(y, t[:, 0:256])


def _load_half_store_half(a, y):
    t = nl.ndarray((128, 512), dtype=nl.float32, name="tile")
    nisa.dma_copy(t[:, 0:256], a[:, 0:256])
    nisa.dma_copy(y, t[:, 0:256])


A = np.arange(128 * 512, dtype=F32).reshape(128, 512)
DECLS = {"a": ((128, 512), F32)}
OUTS = {"y": ((128, 512), F32)}


def _forge(log: CallLog, edit) -> CallLog:
    raw = json.loads(log.to_json())
    edit(raw)
    return CallLog.from_json(json.dumps(raw))


def test_a_replayed_log_is_the_program_the_kernel_wrote():
    log = trace(_copy_kernel, DECLS, OUTS, grid=1)
    assert all(c.fn.startswith(("nl.", "nisa.")) for core in log.cores for c in core)
    assert "cost" not in log.to_json() and "bytes" not in log.to_json()  # no metadata to trust
    direct = simulate(_copy_kernel, {"a": A}, OUTS, grid=1)
    replayed = run(CallLog.from_json(log.to_json()), {"a": A}, OUTS, grid=1)
    assert replayed.latency_ns == direct.latency_ns
    assert (replayed.outputs["y"] == A).all()


def test_a_forged_log_cannot_undercharge():
    """Shrinking a transfer in the log is the same as writing the smaller transfer: the replay
    charges exactly what that kernel costs (a log carries no cost to lie about)."""
    half_out = {"y": ((128, 256), F32)}
    log = trace(_load_all_store_half, DECLS, half_out, grid=1)
    half = {"index": {"tuple": [{"slice": [0, 128, 1]}, {"slice": [0, 256, 1]}]}}

    def shrink(raw):  # the first dma_copy now names half-width views of its dst and src
        call = raw["cores"][0][1]
        for i, arg in enumerate(call[1]):
            tensor, steps = raw["views"][arg["view"]]
            raw["views"].append([tensor, [*steps, ["index", half["index"]]]])
            call[1][i] = {"view": len(raw["views"]) - 1}

    forged = run(_forge(log, shrink), {"a": A}, half_out, grid=1)
    honest = run(log, {"a": A}, half_out, grid=1)
    direct = simulate(_load_half_store_half, {"a": A}, half_out, grid=1)
    assert forged.latency_ns == direct.latency_ns < honest.latency_ns
    assert (forged.outputs["y"] == direct.outputs["y"]).all()
    assert forged.program.n_instructions == direct.program.n_instructions


def test_the_executor_rechecks_every_rule():
    log = trace(_copy_kernel, DECLS, OUTS, grid=1)
    alloc_line = log.cores[0][0].loc.line

    def oversize(raw):  # an SBUF tile far beyond capacity, as if the tracer had been fooled
        raw["cores"][0][0][1][0] = {"tuple": [128, 10_000_000]}

    with pytest.raises(ResourceOverflow) as exc:
        run(_forge(log, oversize), {"a": A}, OUTS, grid=1)
    assert exc.value.loc.line == alloc_line  # still the kernel's line

    def write_input(raw):  # the final copy now targets the input
        raw["cores"][0][2][1][0] = {"view": raw["cores"][0][1][1][1]["view"]}

    with pytest.raises(IllegalAccess, match="read-only"):
        run(_forge(log, write_input), {"a": A}, OUTS, grid=1)


@pytest.mark.parametrize(
    "edit, match",
    [
        (
            lambda raw: raw["cores"][0][1].__setitem__(0, "runtime.simulate"),
            "not part of the kernel language",
        ),
        (
            lambda raw: raw["cores"][0][1].__setitem__(0, "nisa._store"),
            "not part of the kernel language",
        ),
        (
            lambda raw: (
                raw["views"].append([999, []])
                or raw["cores"][0][1][1].__setitem__(0, {"view": len(raw["views"]) - 1})
            ),
            "tensor 999",
        ),
        (lambda raw: raw["cores"][0][1][1].__setitem__(1, {"view": 12345}), "never defines"),
        (
            lambda raw: raw["cores"][0][1][1].__setitem__(
                1, {"reg": [3, 1, 0, 0][: len(dataclasses.fields(RegExpr))]}
            ),
            "no register_load made",
        ),
        (
            lambda raw: raw["cores"][0][1][1].__setitem__(1, {"pickle": "gASV"}),
            "unknown argument kind",
        ),
        (lambda raw: raw["cores"][0][1].append({"latency_ns": 1}), "malformed call"),
        (lambda raw: raw["views"][0][1].append(["__class__", 1]), "unknown indexing step"),
    ],
)
def test_a_malformed_log_is_refused(edit, match):
    log = trace(_copy_kernel, DECLS, OUTS, grid=1)
    with pytest.raises(CallLogError, match=match):
        run(_forge(log, edit), {"a": A}, OUTS, grid=1)


def _seeded_kernel(a, y):
    t = nl.ndarray((128, 512), dtype=nl.float32, name="tile")
    u = nl.ndarray((128, 512), dtype=nl.float32, name="unused")
    nisa.dma_copy(t, a)
    nisa.tensor_scalar(t, t, nl.multiply, 3.0)
    nisa.dma_copy(y, t)
    if a.shape[1] == 0:  # never: keeps `u` allocated but unwritten
        nisa.dma_copy(y, u)


def test_one_replay_serves_every_seed_exactly_like_a_fresh_run():
    """Executing a replayed program again (the executor does, per seed) resets all state: the
    second execution matches a fresh replay bit for bit and in latency."""
    from knight.npu.runtime import Executable

    rng = np.random.default_rng(0)
    a1, a2 = (rng.standard_normal((128, 512)).astype(F32) for _ in range(2))
    exe = Executable(
        trace(_seeded_kernel, DECLS, OUTS, grid=1), DECLS, OUTS, machine="trn2", grid=1
    )
    first = exe.execute({"a": a1})
    second = exe.execute({"a": a2})
    fresh = simulate(_seeded_kernel, {"a": a2}, OUTS, grid=1)
    assert (first.outputs["y"] == a1 * 3).all()
    assert (
        second.outputs["y"] == fresh.outputs["y"]
    ).all() and second.latency_ns == fresh.latency_ns


def test_state_does_not_leak_into_the_next_execution():
    """A program that reads a tile it never wrote fails on every execution, not only the first
    (the second would otherwise read the first execution's values)."""
    from knight.npu.errors import UninitializedRead
    from knight.npu.runtime import Executable

    def reads_stale(a, y):
        t = nl.ndarray((128, 512), dtype=nl.float32, name="tile")
        nisa.dma_copy(y, t)

    exe = Executable(trace(reads_stale, DECLS, OUTS, grid=1), DECLS, OUTS, machine="trn2", grid=1)
    for _ in range(2):
        with pytest.raises(UninitializedRead):
            exe.execute({"a": A})


def test_calls_outside_the_recorded_api_are_refused():
    """A kernel holding an unwrapped function (captured before tracing) cannot issue unrecorded
    instructions: the replay would silently lack them."""
    from knight.npu import nisa as real

    raw_copy = real.dma_copy

    def sneaky(a, y):
        t = nl.ndarray((128, 512), dtype=nl.float32)
        raw_copy(t, a)
        nisa.dma_copy(y, t)

    with pytest.raises(Exception, match="issued by calling nl/nisa functions"):
        trace(sneaky, DECLS, OUTS, grid=1)


# ----------------------------------------------------------------------------- determinism per shape


def test_hash_seed_dependent_order_is_nondeterministic_on_every_shape(rmsnorm):
    source = (HONEYPOTS / "hp_hashseed_order.py").read_text()
    with LocalEvaluator(isolate=True, workers=1, cache=MemoryCache()) as ev:
        report = ev.evaluate(source, rmsnorm, profile=False)
        assert report.failure.category == Category.nondeterministic, report.failure.one_line()
        assert "another hash seed" in report.failure.message
        machine = ev.machine_name or "trn2"
        from knight.npu.machine import load_machine

        m = load_machine(machine)
        visible = rmsnorm.all_workloads()
        first = ev.traces(source, "kernel.py", rmsnorm, visible, m, TRACE_SEED)
        again = ev.traces(source, "kernel.py", rmsnorm, visible, m, CHECK_SEED)
    assert all(
        a.ok and b.ok and a.call_log != b.call_log for a, b in zip(first, again, strict=True)
    )


# ----------------------------------------------------------------------------- clean verdicts


def test_a_huge_exception_message_is_a_bounded_verdict(rmsnorm, no_static_check):
    source = "def rmsnorm(x, gamma, out):\n    raise ValueError('x' * 30_000_000)\n"
    with LocalEvaluator(
        isolate=True, workers=1, cache=MemoryCache(), timeout_s=120, max_seeds=1
    ) as ev:
        report = ev.evaluate(source, rmsnorm, profile=False)
    f = report.failure
    assert f.category == Category.kernel_exception, f.one_line()
    assert len(f.message) <= 4200 and "more characters" in f.message


def test_a_lone_surrogate_in_a_tensor_name_survives(rmsnorm, no_static_check, tmp_path):
    """The name reaches the executor through the call log and comes back in an error message."""
    source = (
        "from knight.npu import nisa, nl\n"
        "def rmsnorm(x, gamma, out):\n"
        "    t = nl.ndarray((x.shape[0], 2048), dtype=nl.bfloat16, name='bad' + chr(0xDC80) + 'name')\n"
        "    nisa.dma_copy(dst=out, src=t)\n"
    )
    with LocalEvaluator(
        isolate=True, workers=1, cache=MemoryCache(), max_seeds=1, input_cache=tmp_path / "inputs"
    ) as ev:
        report = ev.evaluate(source, rmsnorm)
    f = report.failure
    assert f.category == Category.uninitialized_read, f.one_line()
    assert "bad\\udc80name" in f.message and f.line == 4


# ----------------------------------------------------------------------------- the OS sandbox

SANDBOXED = """
import os
import socket
import subprocess
import tempfile


def rmsnorm(x, gamma, out):
    seen = []
    try:
        s = socket.create_connection(("127.0.0.1", {port}), timeout=2)
        s.sendall(b"leak")
        seen.append("socket:connected")
    except OSError as e:
        seen.append("socket:" + type(e).__name__)
    try:
        with open({db!r}, "rb") as fh:
            seen.append("db:read " + str(len(fh.read())))
    except OSError as e:
        seen.append("db:" + type(e).__name__)
    try:
        with open({outside!r}, "w") as fh:
            fh.write("escaped")
        seen.append("outside:written")
    except OSError as e:
        seen.append("outside:" + type(e).__name__)
    with open("own.txt", "w") as fh:  # its private folder is writable
        fh.write("ok")
    seen.append("own:" + os.getcwd())
    raise RuntimeError(";".join(seen))
"""


@pytest.mark.skipif(
    sandbox.mode() != "bwrap", reason="bubblewrap is not available (apt-get install bubblewrap)"
)
def test_sandboxed_code_cannot_reach_network_database_or_files(rmsnorm, tmp_path):
    db = tmp_path / "knight.db"
    db.write_bytes(b"SQLite format 3\x00" + b"secret" * 100)
    outside = tmp_path / "escaped.txt"
    server = socket.create_server(("127.0.0.1", 0))
    source = SANDBOXED.format(port=server.getsockname()[1], db=str(db), outside=str(outside))
    pool = WorkerPool(1, timeout_s=60)
    try:
        [res] = pool.run_many(
            WorkerKind("trace", TRACE_SEED), [_request(rmsnorm, source)], TraceResult
        )
        # A connection the kernel made would wait in the listen backlog: accept without blocking.
        server.setblocking(False)
        try:
            server.accept()[0].close()
            connected = True
        except BlockingIOError:
            connected = False
    finally:
        pool.close()
        server.close()
    msg = res.failure.message
    assert "socket:connected" not in msg and "socket:" in msg, msg
    assert "db:FileNotFoundError" in msg, msg
    assert "outside:" in msg and "outside:written" not in msg, msg
    assert "own:/tmp" in msg, msg
    assert not outside.exists() and not connected


def test_without_the_sandbox_workers_still_trace_and_execute(rmsnorm, monkeypatch, tmp_path):
    """KNIGHT_SANDBOX=none is the documented fallback: same verdicts, less containment."""
    monkeypatch.setenv("KNIGHT_SANDBOX", "none")
    with LocalEvaluator(
        isolate=True, workers=1, cache=MemoryCache(), max_seeds=1, input_cache=tmp_path / "inputs"
    ) as ev:
        assert ev.pool is not None and ev.pool.sandbox == "none"
        report = ev.evaluate(rmsnorm.baseline_source(), rmsnorm, profile=False)
    assert report.ok, report.failure and report.failure.one_line()


def test_without_bubblewrap_auto_still_judges_and_says_so_in_one_line(tmp_path, monkeypatch):
    """`auto` falls back to no OS sandbox where bubblewrap is missing, never silently; asking for
    `none` is not warned about."""
    env = {**knight_env(tmp_path / "cache"), "PATH": str(tmp_path)}  # no bwrap on this PATH
    env.pop("KNIGHT_SANDBOX", None)
    baseline = str(ROOT / "baselines/rmsnorm/baseline.py")
    res = subprocess.run(
        [*knight_argv("eval", baseline, "--seeds", "1", "--json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0 and json.loads(res.stdout)["status"] == "ok", res.stderr
    warned = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert warned == [f"warning: {sandbox.NO_SANDBOX}"]
    monkeypatch.setenv("KNIGHT_SANDBOX", "none")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sandbox.mode() == "none"


def test_a_misconfigured_sandbox_is_one_clear_error(monkeypatch):
    from knight.errors import KnightError

    monkeypatch.setenv("KNIGHT_SANDBOX", "maybe")
    with pytest.raises(KnightError, match="KNIGHT_SANDBOX must be one of"):
        WorkerPool(1)


def test_the_pool_size_comes_from_knight_workers_else_the_usable_cores(monkeypatch):
    from knight.errors import KnightError

    monkeypatch.setenv("KNIGHT_WORKERS", "3")
    assert WorkerPool().size == 3 and WorkerPool(1).size == 1  # an explicit size wins
    monkeypatch.delenv("KNIGHT_WORKERS")
    assert WorkerPool().size == len(os.sched_getaffinity(0))
    for bad in ("0", "two", "-1", "²", "1.5"):
        monkeypatch.setenv("KNIGHT_WORKERS", bad)
        with pytest.raises(KnightError, match="KNIGHT_WORKERS must be a whole number >= 1"):
            WorkerPool()
    # From the command line: one line, no traceback, no evaluation started.
    monkeypatch.setenv("KNIGHT_WORKERS", "many")
    res = knight_here("eval", str(ROOT / "baselines/rmsnorm/baseline.py"), "--problem", "rmsnorm")
    assert res.returncode == 1 and res.stderr.strip().splitlines()[-1] == (
        "error: KNIGHT_WORKERS must be a whole number >= 1, not 'many'"
    )


@pytest.mark.skipif(
    sandbox.mode() != "bwrap", reason="bubblewrap is not available (apt-get install bubblewrap)"
)
def test_a_python_installed_under_tmp_stays_visible_in_the_sandbox(monkeypatch):
    """The sandbox's private /tmp must not hide the interpreter: a CI virtualenv often lives
    under /tmp, and hiding it made `auto` fall back to no sandbox at all."""
    prefix = Path(tempfile.mkdtemp(dir="/tmp", prefix="knight-venv-"))
    try:
        (prefix / "marker").write_text("visible")
        real = sandbox._python_dirs()
        monkeypatch.setattr(sandbox, "_python_dirs", lambda: [*real, prefix])
        shown = subprocess.run(
            ["bwrap", *sandbox._base_args(), "--", "/bin/cat", str(prefix / "marker")],
            capture_output=True,
            text=True,
        )
        assert (shown.returncode, shown.stdout) == (0, "visible"), shown.stderr
    finally:
        shutil.rmtree(prefix)


def test_a_finished_trace_and_replay_leave_no_cyclic_garbage():
    """Every view of a trace is freed when the trace ends, not left to the cyclic collector: a
    worker collects between requests, and 110k objects of a moe_decode trace cost ~0.35 s there."""
    problem = load_problem("moe_router")
    kernel = load_kernel(problem.baseline_source(), "baseline.py", problem.spec.entry)
    w = problem.spec.workloads[0]
    inputs = problem.make_inputs(w, w.seeds[0])
    decls = {name: (a.shape, a.dtype) for name, a in inputs.items()}
    outputs, grid = problem.output_specs(w), problem.spec.grid
    run(trace(kernel, decls, outputs, grid=grid), inputs, outputs, grid=grid)  # first-use caches

    def simulator_garbage() -> list[str]:
        """The simulator's objects the cyclic collector finds (other threads' garbage aside)."""
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            return [type(o).__name__ for o in gc.garbage if type(o) in (View, Tensor)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()

    # Free what earlier tests left: garbage saved by DEBUG_SAVEALL would only turn into cycles
    # again when the list is cleared, and be found once more below.
    gc.collect()
    gc.disable()
    try:
        log = trace(kernel, decls, outputs, grid=grid)
        assert simulator_garbage() == []
        run(log, inputs, outputs, grid=grid)
        assert simulator_garbage() == []
    finally:
        gc.enable()
