"""Running the `knight` command line in a subprocess, as a user does, for end-to-end tests.

conftest.py sets KNIGHT_BASELINES and KNIGHT_SKILLS for the whole session, so every subprocess
finds the checkout's problems and skills; here each gets its own evaluation cache and no API key.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from knight.cli import main

ROOT = Path(__file__).resolve().parents[1]


def knight_argv(*args: str) -> list[str]:
    """The command line of `knight ARGS` with this interpreter (and so this Knight)."""
    return [sys.executable, "-m", "knight.cli", *args]


def knight_env(cache: Path) -> dict[str, str]:
    """This environment without ANTHROPIC_API_KEY (no test reaches the real API), caching
    evaluations in `cache`."""
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    env["KNIGHT_CACHE"] = str(cache)
    return env


def knight(*args: str, cwd: Path = ROOT, check: bool = False) -> subprocess.CompletedProcess:
    """Run `knight ARGS` in `cwd` (its evaluation cache there too); `check`: insist on exit 0."""
    res = subprocess.run(
        knight_argv(*args),
        capture_output=True,
        text=True,
        cwd=cwd,
        env=knight_env(cwd / ".knight-cache"),
        timeout=600,
    )
    if check:
        assert res.returncode == 0, res.stderr
    return res


def knight_here(
    *args: str, cwd: Path | None = None, check: bool = False
) -> subprocess.CompletedProcess:
    """`knight ARGS` through the same entry point, in this process (in `cwd` if given): for
    commands that start no run (`show`, `history`, `report`, `export`, `--help`, ...), whose
    interpreter start-up would otherwise dominate the test."""
    out, err = io.StringIO(), io.StringIO()
    argv, here = sys.argv, os.getcwd()
    sys.argv = ["knight", *args]
    try:
        if cwd is not None:
            os.chdir(cwd)
        with redirect_stdout(out), redirect_stderr(err):
            main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
        os.chdir(here)
    res = subprocess.CompletedProcess(["knight", *args], code, out.getvalue(), err.getvalue())
    if check:
        assert res.returncode == 0, res.stderr
    return res
