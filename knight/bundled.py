"""Where Knight finds its bundled folders (`baselines/`, `skills/`).

A source checkout has them at its root; a wheel carries copies in `knight/_bundled/` (see
`setup.py`), so an installed Knight works from any directory.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def bundled_dir(name: str) -> Path | None:
    """The folder `name` shipped with this Knight: the checkout's, else the wheel's copy."""
    # Only a source checkout has pyproject.toml beside the package; in site-packages the
    # package's parent holds every other installed distribution's files.
    checkout = _PACKAGE.parent if (_PACKAGE.parent / "pyproject.toml").is_file() else None
    for candidate in (checkout and checkout / name, _PACKAGE / "_bundled" / name):
        if candidate is not None and candidate.is_dir():
            return candidate
    return None


def search_dirs(name: str, env_var: str) -> list[Path]:
    """Folders called `name`, in the order they are consulted: `$env_var`, `./name` or the
    nearest parent's, then the bundled one; duplicates removed."""
    found: list[Path] = []
    if env := os.environ.get(env_var):
        found.append(Path(env))
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if (d / name).is_dir():
            found.append(d / name)
            break
    if (shipped := bundled_dir(name)) is not None:
        found.append(shipped)
    unique: list[Path] = []
    for d in found:
        if d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique
