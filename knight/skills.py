"""The skills library: `skills/<name>/SKILL.md` files in the Agent Skills format.

Each file starts with YAML-style front matter (`name`, `description`, and Knight's own fields
under `metadata`); the body is the advice itself. Proposers see the catalog (name and
description) and read bodies on demand. Usage statistics live in the database, not here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from knight.bundled import search_dirs

_FRONT = re.compile(r"\A---\s*\n(.*?)\n---\s*\n?(.*)\Z", re.S)


@dataclass(frozen=True)
class Skill:
    """One skill: its name, when to use it, its metadata and body."""

    name: str
    description: str
    body: str
    metadata: dict[str, str] = field(default_factory=dict)
    path: Path | None = None


def skills_dirs() -> list[Path]:
    """Skill folders, most specific first: `$KNIGHT_SKILLS` alone if it is set, else `./skills`
    (or a parent's) and the skills shipped with Knight."""
    if env := os.environ.get("KNIGHT_SKILLS"):
        return [Path(env)]
    return search_dirs("skills", "KNIGHT_SKILLS")


def parse_skill(text: str, path: Path | None = None) -> Skill:
    """Parse a SKILL.md; raises ValueError when the front matter lacks name or description."""
    m = _FRONT.match(text)
    if not m:
        raise ValueError("SKILL.md must start with front matter between --- lines")
    fields_: dict[str, str] = {}
    metadata: dict[str, str] = {}
    section = None
    for line in m.group(1).splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, value = line.partition(":")
        value = value.strip().strip('"').strip("'")
        if line.startswith((" ", "\t")) and section == "metadata":
            metadata[key.strip()] = value
        else:
            section = key.strip()
            if value:
                fields_[section] = value
    if "name" not in fields_ or "description" not in fields_:
        raise ValueError("SKILL.md front matter needs 'name' and 'description'")
    return Skill(fields_["name"], fields_["description"], m.group(2).strip(), metadata, path)


def load_skills(root: Path | None = None) -> dict[str, Skill]:
    """Every valid, non-deprecated skill under `root` (default: all of `skills_dirs()`, where a
    skill in a more specific folder replaces one of the same name), by name."""
    found: dict[str, Skill] = {}
    for folder in [root] if root else reversed(skills_dirs()):
        found.update(_read_folder(folder))
    # A local copy marked deprecated hides the shipped skill too: a person's verdict stands.
    return {name: s for name, s in found.items() if s.metadata.get("status") != "deprecated"}


def _read_folder(root: Path) -> dict[str, Skill]:
    out: dict[str, Skill] = {}
    for path in sorted(root.glob("*/SKILL.md")):
        try:
            skill = parse_skill(path.read_text(), path)
        except (ValueError, OSError):
            continue  # an invalid file is skipped, not fatal
        out[skill.name] = skill
    return out


def write_skill(root: Path, skill: Skill) -> Path:
    """Write a skill as `root/<name>/SKILL.md` (used by consolidation for learned skills)."""
    folder = root / skill.name
    folder.mkdir(parents=True, exist_ok=True)
    meta = "".join(f'  {k}: "{_flat(v)}"\n' for k, v in sorted(skill.metadata.items()))
    text = f'---\nname: {skill.name}\ndescription: "{_flat(skill.description)}"\nmetadata:\n{meta}---\n\n{skill.body}\n'
    path = folder / "SKILL.md"
    path.write_text(text)
    return path


def _flat(value: str) -> str:
    """One line, no double quotes: front-matter values are single quoted strings."""
    return " ".join(str(value).replace('"', "'").split())
