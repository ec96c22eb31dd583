"""Finding problems: `$KNIGHT_BASELINES`, a `baselines/` folder here, or the ones Knight ships."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from knight.bundled import search_dirs
from knight.errors import KnightError, NotFoundError
from knight.problems.spec import Problem, load_problem_dir
from knight.source import defined_functions

DEFAULT_PROBLEM = "moe_decode"


def baselines_dirs() -> list[Path]:
    """Where problems are looked for, in order: $KNIGHT_BASELINES, ./baselines or a parent's,
    then the problems shipped with Knight."""
    return search_dirs("baselines", "KNIGHT_BASELINES")


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


def problem_for_kernel(source: str, name: str | None = None) -> Problem:
    """The problem `name`; without one, the installed problem whose entry function `source`
    defines (when exactly one does), else the default problem."""
    if name is None:
        names = defined_functions(source)
        matches = [p for p in list_problems() if p.spec.entry in names]
        if len(matches) == 1:
            return matches[0]
    return load_problem(name)


def _load(path: Path) -> Problem:
    try:
        return load_problem_dir(path)
    except (ValidationError, ValueError, OSError) as e:
        raise KnightError(f"problem at {path} is invalid: {str(e).splitlines()[0]}") from None
