"""The loop end to end: a scripted run's outcomes in history and show, kill -9 and resume, the CLI."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_runner import knight, knight_argv, knight_env, knight_here

# The scripted run of the module fixture is made once: one xdist worker for the module.
pytestmark = pytest.mark.xdist_group("agent")


def edit(search: str, replace: str) -> dict:
    return {"file": "kernel.py", "search": search, "replace": replace}


COLS = "COLS_PER_TILE = {}  # columns per normalise / multiply / store step"
REDUCE = "    nisa.tensor_reduce(sum_sq, nl.add, sq, axis=1, keepdims=True)\n"
SCRIPT = [
    {
        "hypothesis": "Whole-row tiles: one normalise/multiply/store step instead of four.",
        "tags": ["knob"],
        "edits": [edit(COLS.format(512), COLS.format(2048))],
    },
    {
        "hypothesis": "Store through a second queue.",
        "edits": [edit("nisa.dma_copy(dst=out, src=nowhere)", "pass")],
    },
    {
        "hypothesis": "Reduce the squares in two halves, then add the halves.",
        "skills_used": ["precision-alignment"],
        "edits": [
            edit(
                REDUCE,
                '    halves = nl.ndarray((T, 2), dtype=nl.float32, name="halves")\n'
                "    nisa.tensor_reduce(halves, nl.add, sq.reshape(T, 2, H // 2), axis=2)\n"
                "    nisa.tensor_reduce(sum_sq, nl.add, halves, axis=1, keepdims=True)\n",
            )
        ],
    },
    {
        "hypothesis": "Keep a large fp32 scratch tile resident.",
        "edits": [
            edit(
                REDUCE,
                REDUCE
                + '    scratch = nl.ndarray((T, 100000), dtype=nl.float32, name="scratch")\n',
            )
        ],
    },
    {
        "hypothesis": "Go back to 512-column tiles.",
        "edits": [edit(COLS.format(2048), COLS.format(512))],
    },
    {"hypothesis": "Use 256-column tiles.", "edits": [edit(COLS.format(2048), COLS.format(256))]},
]
EXPECTED = [
    ("accepted", None),
    ("failed", "patch_no_match"),
    ("failed", "mismatch_rounding"),
    ("failed", "resource_overflow"),
    ("rejected", "duplicate_candidate"),
    ("rejected", "regression"),
]


@pytest.fixture(scope="module")
def scripted_run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("scripted")
    (d / "script.jsonl").write_text("".join(json.dumps(p) + "\n" for p in SCRIPT))
    res = knight(
        "run",
        "--budget",
        "6",
        "--problem",
        "rmsnorm",
        "--proposer",
        "scripted",
        "--script",
        str(d / "script.jsonl"),
        "--db",
        str(d / "k.db"),
        "--json",
        cwd=d,
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["iterations"] == 6 and summary["accepted"] == 1 and summary["speedup"] > 1.0
    return d


def test_history_shows_each_outcome_with_its_category(scripted_run):
    res = knight_here("history", "--db", str(scripted_run / "k.db"), "--json", check=True)
    rows = json.loads(res.stdout)["iterations"]
    assert [(r["status"], r["category"]) for r in rows] == EXPECTED
    assert rows[0]["speedup_vs_baseline"] > 1.0 and rows[5]["speedup_vs_parent"] < 1.0
    only_failed = json.loads(
        knight_here(
            "history",
            "--db",
            str(scripted_run / "k.db"),
            "--status",
            "failed",
            "--json",
            check=True,
        ).stdout
    )["iterations"]
    assert [r["number"] for r in only_failed] == [2, 3, 4]


def test_show_attributes_every_failure(scripted_run):
    def show(n: int) -> dict:
        return json.loads(
            knight_here(
                "show", str(n), "--db", str(scripted_run / "k.db"), "--json", check=True
            ).stdout
        )

    accepted = show(1)
    assert accepted["diff"].count("+COLS_PER_TILE = 2048") == 1 and accepted["patch_rungs"] == [
        "exact"
    ]
    assert accepted["profile_change"]["total_ns"][1] < accepted["profile_change"]["total_ns"][0]
    no_match = show(2)["failure"]
    assert no_match["category"] == "patch_no_match" and no_match["details"]["nearest"]
    rounding = show(3)["failure"]
    assert rounding["category"] == "mismatch_rounding" and rounding["hint"] == "precision-alignment"
    assert 0 < rounding["details"]["differing_share"] < 1 and "ulp_histogram" in rounding["details"]
    overflow = show(4)["failure"]
    assert overflow["category"] == "resource_overflow" and overflow["file"] == "kernel.py"
    source_line = show(4)["edits"][0]["replace"].splitlines()[-1].strip()
    assert "scratch" in source_line and overflow["line"] > 0
    assert show(5)["category"] == "duplicate_candidate"
    text = knight_here("show", "3", "--db", str(scripted_run / "k.db"), "--diff", check=True).stdout
    assert "mismatch_rounding" in text and "hint" in text and "+    halves" in text


def test_replay_rebuilds_the_champion_and_matches(scripted_run):
    out = scripted_run / "best.py"
    res = knight_here(
        "replay", "--db", str(scripted_run / "k.db"), "--out", str(out), "--json", check=True
    )
    data = json.loads(res.stdout)
    assert data["all_match"] is True and len(data["steps"]) == 1
    assert "COLS_PER_TILE = 2048" in out.read_text()
    again = knight_here("eval", str(out), "--problem", "rmsnorm", "--json", cwd=scripted_run)
    assert json.loads(again.stdout)["status"] == "ok"


def _iterations(db: Path) -> list[int]:
    try:
        with sqlite3.connect(db, timeout=5) as c:
            return [n for (n,) in c.execute("select number from iterations order by number")]
    except sqlite3.Error:
        return []


def test_killed_run_resumes_without_losing_or_duplicating_iterations(tmp_path):
    env = knight_env(tmp_path / "cache")
    killed = tmp_path / "killed.db"
    args = ["run", "--budget", "6", "--problem", "rmsnorm", "--seed", "3", "--min-gain", "1.0001"]
    proc = subprocess.Popen(
        knight_argv(*args, "--db", str(killed)),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while len(_iterations(killed)) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.15)  # into the next iteration
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _iterations(killed)
    assert 2 <= len(before) < 6, "the kill should land mid-run"
    resumed = knight("run", "--resume", "1", "--db", str(killed), "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert _iterations(killed) == [1, 2, 3, 4, 5, 6]
    with sqlite3.connect(killed) as c:
        assert c.execute("pragma integrity_check").fetchone()[0] == "ok"
    straight = knight(*args, "--db", str(tmp_path / "straight.db"), "--json", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr
    assert (
        json.loads(resumed.stdout)["champion_hash"] == json.loads(straight.stdout)["champion_hash"]
    )
    assert (
        json.loads(resumed.stdout)["best_score_ns"] == json.loads(straight.stdout)["best_score_ns"]
    )


COMMANDS = [
    "run",
    "history",
    "show",
    "replay",
    "runs",
    "eval",
    "profile",
    "problems",
    "db",
    "skills",
]


def test_help_is_complete():
    top = knight_here("--help", check=True).stdout
    for cmd in COMMANDS:
        assert cmd in top
        assert knight_here(cmd, "--help", check=True).stdout.strip()
    run_help = knight_here("run", "--help").stdout
    assert "--resume" in run_help and "--max-cost" in run_help


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["history", "--db", "missing.db"], 1, "not found"),
        (["run", "--budget", "1", "--problem", "nosuch", "--db", "x.db"], 1, "unknown problem"),
        (["eval", "no/such/kernel.py"], 2, "not found"),
        (["show", "1", "--db", "missing.db"], 1, "not found"),
        (["run", "--budget", "0"], 2, "--budget"),
        (["run", "--proposer", "nonsense", "--db", "x.db"], 2, "unknown proposer"),
        (["eval", "README.md", "--machine", "trn9"], 2, "unknown machine"),
        (["eval", "README.md", "--machine", "nope.toml"], 2, "cannot load machine preset"),
        (["run", "--machine", "trn9", "--db", "x.db"], 2, "unknown machine"),
    ],
)
def test_user_errors_are_one_line_without_traceback(tmp_path, args, code, words):
    (tmp_path / "README.md").write_text("x")
    res = knight_here(*args, cwd=tmp_path)
    assert res.returncode == code, (res.stdout, res.stderr)
    assert words in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.db").exists()  # refused before any database is created


@pytest.mark.parametrize("args", [["problems", "--bogus"], ["history", "--limit", "abc"], ["eval"]])
def test_usage_mistakes_exit_2_without_traceback(tmp_path, args):
    res = knight_here(*args, cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "Error" in res.stderr


def test_resume_keeps_the_runs_machine_and_a_spent_script_ends_the_run(tmp_path):
    script = tmp_path / "one.jsonl"
    script.write_text(json.dumps(SCRIPT[0]) + "\n")
    first = knight(
        "run",
        "-p",
        "rmsnorm",
        "--machine",
        "trn3",
        "--proposer",
        "scripted",
        "--script",
        str(script),
        "--budget",
        "3",
        "--db",
        "m.db",
        "--json",
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert (
        summary["iterations"] == 1
        and summary["status"] == "finished"
        and "exhausted" in summary["stop_reason"]
    )
    replayed = json.loads(
        knight("replay", "--db", "m.db", "--json", cwd=tmp_path, check=True).stdout
    )
    assert replayed["machine"] == "trn3" and replayed["all_match"] and replayed["same_harness"]


def test_bad_run_id_is_a_clear_error(scripted_run):
    res = knight_here("history", "--db", str(scripted_run / "k.db"), "--run", "42")
    assert res.returncode == 1 and "run 42" in res.stderr and "Traceback" not in res.stderr


def test_consolidation_turns_accepted_patches_into_learned_skills(scripted_run, tmp_path):
    from knight.skills import load_skills

    out = tmp_path / "skills"
    res = knight(
        "skills",
        "consolidate",
        "--db",
        str(scripted_run / "k.db"),
        "--out",
        str(out),
        "--json",
        check=True,
    )
    written = json.loads(res.stdout)["written"]
    learned = load_skills(out)
    assert set(written) == set(learned) and len(written) == 1
    skill = learned[written[0]]
    assert skill.metadata["origin"] == "learned" and skill.metadata["status"] == "candidate"
    assert "iteration 1" in skill.metadata["evidence"] and "+COLS_PER_TILE = 2048" in skill.body
    assert skill.metadata["iteration"] == "1" and float(skill.metadata["gain"]) > 1.0
    assert skill.metadata["run"] and skill.metadata["replay"] == "not replayed"
    again = json.loads(
        knight(
            "skills",
            "consolidate",
            "--db",
            str(scripted_run / "k.db"),
            "--out",
            str(out),
            "--json",
            check=True,
        ).stdout
    )
    assert again["written"] == [] and again["skipped"] == written


AGENT = """\
import json, pathlib, sys, time

state = pathlib.Path(sys.argv[1])
calls = len(list(state.glob("call-*"))) + 1
(state / f"call-{calls}").touch()
if calls == 2 and not (state / "release").exists():
    (state / "blocked").touch()
    time.sleep(300)  # a slow model: Ctrl-C arrives while knight waits for it
width = {1: 2048, 2: 1024, 3: 256}.get(calls, 128)
old = 512 if calls == 1 else 2048
line = "COLS_PER_TILE = {}  # columns per normalise / multiply / store step"
edit = {"file": "kernel.py", "search": line.format(old), "replace": line.format(width)}
patch = {"hypothesis": f"{width}-column tiles", "rationale": "", "tags": [], "skills_used": [],
         "edits": [edit]}
pathlib.Path(sys.argv[2]).write_text(json.dumps(patch))
"""


def test_ctrl_c_records_the_run_as_interrupted_and_it_resumes(tmp_path):
    """Deterministic: the agent command blocks in iteration 2 until SIGINT reaches knight.

    knight starts with SIGINT ignored, as a shell starts a background job: the run must still
    stop on SIGINT (the service's cancel is SIGINT too)."""
    env = knight_env(tmp_path / "cache")
    state = tmp_path / "state"
    state.mkdir()
    (tmp_path / "agent.py").write_text(AGENT)
    command = f"{sys.executable} {tmp_path / 'agent.py'} {state} {{output_file}} {{prompt_file}}"
    db = tmp_path / "int.db"
    proc = subprocess.Popen(
        knight_argv(
            "run",
            "--budget",
            "3",
            "--problem",
            "rmsnorm",
            "--proposer",
            "command",
            "--command",
            command,
            "--db",
            str(db),
            "--json",
        ),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    deadline = time.monotonic() + 300
    while not (state / "blocked").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert (state / "blocked").exists(), proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    summary = json.loads(out)
    assert (
        summary["status"] == "interrupted" and summary["iterations"] == 1 and "Traceback" not in err
    )
    with sqlite3.connect(db) as c:
        assert c.execute("select status from runs").fetchone()[0] == "interrupted"
    assert _iterations(db) == [1]
    (state / "release").touch()
    resumed = knight("run", "--resume", "1", "--db", str(db), "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["iterations"] == 3
    assert _iterations(db) == [1, 2, 3]


def test_a_failing_kernel_makes_knight_eval_exit_non_zero(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\ndef rmsnorm(x, gamma, out):\n    pass\n")
    res = knight("eval", str(bad), "--problem", "rmsnorm", "--json", cwd=tmp_path)
    assert res.returncode == 1
    report = json.loads(res.stdout)
    assert report["status"] == "failed" and report["failure"]["category"] == "forbidden_construct"
    assert report["failure"]["line"] == 1 and report["score_ns"] is None
