"""Finding problems: the `baselines/` folder of the checkout, or `$KNIGHT_BASELINES`."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from knight.errors import KnightError, NotFoundError
from knight.problems.spec import Problem, load_problem_dir

DEFAULT_PROBLEM = "moe_decode"


def baselines_dirs() -> list[Path]:
    """Where problems are looked for, in order: $KNIGHT_BASELINES, ./baselines and its parents,
    then the source checkout this package was installed from."""
    found: list[Path] = []
    env = os.environ.get("KNIGHT_BASELINES")
    if env:
        found.append(Path(env))
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if (d / "baselines").is_dir():
            found.append(d / "baselines")
            break
    src = Path(__file__).resolve().parents[2] / "baselines"
    if src.is_dir():
        found.append(src)
    unique: list[Path] = []
    for d in found:
        if d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


def list_problems() -> list[Problem]:
    """Every problem in the first baselines folder that has any."""
    for d in baselines_dirs():
        problems = [_load(p) for p in sorted(d.iterdir()) if (p / "problem.toml").is_file()]
        if problems:
            return problems
    return []


def load_problem(name: str | None = None) -> Problem:
    """Load a problem by id (default `moe_decode`) or by the path of its folder."""
    name = name or DEFAULT_PROBLEM
    path = Path(name)
    if (path / "problem.toml").is_file():
        return _load(path)
    for d in baselines_dirs():
        if (d / name / "problem.toml").is_file():
            return _load(d / name)
    where = ", ".join(str(d) for d in baselines_dirs()) or "no baselines/ folder found"
    if not baselines_dirs():
        raise NotFoundError(
            f"no problems installed yet: looked for baselines/ here and in $KNIGHT_BASELINES ({where})"
        )
    known = ", ".join(p.id for p in list_problems()) or "none"
    raise NotFoundError(f"unknown problem {name!r} (known: {known})")


def _load(path: Path) -> Problem:
    try:
        return load_problem_dir(path)
    except (ValidationError, ValueError, OSError) as e:
        raise KnightError(f"problem at {path} is invalid: {str(e).splitlines()[0]}") from None
