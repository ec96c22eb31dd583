"""An installed Knight carries its problems and skills: it works from any directory.

CI installs Knight into site-packages (not editable), so there these tests exercise the wheel's
`knight/_bundled/` copies; in an editable install they exercise the checkout's folders.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from cli_runner import ROOT, knight_argv


def _knight_elsewhere(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("KNIGHT_BASELINES", "KNIGHT_SKILLS")}
    env.pop("ANTHROPIC_API_KEY", None)
    return subprocess.run(
        knight_argv(*args), capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )


def test_problems_are_found_outside_the_checkout_and_are_the_checkouts(tmp_path: Path) -> None:
    from knight.problems.spec import load_problem_dir

    res = _knight_elsewhere(tmp_path, "problems", "--json")
    assert res.returncode == 0, res.stderr
    found = {p["id"]: p["hash"] for p in json.loads(res.stdout)}
    checkout = {
        d.name: load_problem_dir(d).hash
        for d in sorted((ROOT / "baselines").iterdir())
        if (d / "problem.toml").is_file()
    }
    # Same ids and same content hashes: the shipped copy is complete and byte-identical.
    assert found == checkout


def test_skills_are_found_outside_the_checkout(tmp_path: Path) -> None:
    res = _knight_elsewhere(tmp_path, "skills", "list", "--json")
    assert res.returncode == 0, res.stderr
    names = {s["name"] for s in json.loads(res.stdout)}
    assert names == {p.parent.name for p in (ROOT / "skills").glob("*/SKILL.md")}


def test_a_local_skills_folder_adds_to_the_shipped_skills(tmp_path: Path) -> None:
    """Consolidation writes `./skills`; that must not hide the curated library, except where a
    person deprecated a skill by name."""

    def skill(name: str, status: str) -> None:
        (tmp_path / "skills" / name).mkdir(parents=True)
        (tmp_path / "skills" / name / "SKILL.md").write_text(
            f'---\nname: {name}\ndescription: "d"\nmetadata:\n  origin: "learned"\n'
            f'  status: "{status}"\n---\nbody\n'
        )

    skill("learned-wide-tiles", "candidate")
    skill("core-sharding", "deprecated")
    res = _knight_elsewhere(tmp_path, "skills", "list", "--json")
    assert res.returncode == 0, res.stderr
    names = {s["name"] for s in json.loads(res.stdout)}
    shipped = {p.parent.name for p in (ROOT / "skills").glob("*/SKILL.md")}
    assert names == (shipped - {"core-sharding"}) | {"learned-wide-tiles"}
