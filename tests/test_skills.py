"""The curated skills library: every SKILL.md parses, is named after its folder, is loadable,
covers every skill the failure taxonomy points to, and teaches only APIs that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from knight.evaluation.categories import HINTS
from knight.npu import nisa, nl
from knight.skills import load_skills, parse_skill

SKILLS_ROOT = Path(__file__).resolve().parents[1] / "skills"
SKILL_FILES = sorted(SKILLS_ROOT.glob("*/SKILL.md"))
REQUIRED = {
    "patching", "kernel-language", "kernel-rules", "sbuf-psum-budget", "precision-alignment",
    "reading-the-profile", "dma-contiguous-runs", "dma-queues-and-engines", "double-buffering",
    "psum-banks-and-readout", "expert-sharding", "gemv-orientation",
}
# `nisa.<name>` / `nl.<name>` as kernel code spells them; not preceded by a word character, a dot
# or a slash, so `knight.npu.nisa` or a path ending in `nl` followed by `.py` are not API uses.
NISA_USE = re.compile(r"(?<![\w./])nisa\.([A-Za-z_]\w*)")
NL_USE = re.compile(r"(?<![\w./])nl\.([A-Za-z_]\w*)")


def _ids(paths: list[Path]) -> list[str]:
    return [p.parent.name for p in paths]


def test_skills_folder_has_the_curated_set():
    assert SKILL_FILES, f"no skills under {SKILLS_ROOT}"
    assert REQUIRED <= {p.parent.name for p in SKILL_FILES}


@pytest.mark.parametrize("path", SKILL_FILES, ids=_ids(SKILL_FILES))
def test_skill_parses_with_front_matter(path: Path):
    skill = parse_skill(path.read_text(), path)
    assert skill.name == path.parent.name
    assert skill.description.strip()
    assert len(skill.description) < 300, f"{skill.name}: description is {len(skill.description)} characters"
    assert skill.metadata.get("origin") in ("curated", "learned")
    assert skill.metadata.get("status") in ("candidate", "verified", "deprecated")
    assert skill.body.strip()


@pytest.mark.parametrize("path", [p for p in SKILL_FILES if p.parent.name in REQUIRED],
                         ids=_ids([p for p in SKILL_FILES if p.parent.name in REQUIRED]))
def test_curated_skill_metadata_and_length(path: Path):
    skill = parse_skill(path.read_text(), path)
    assert skill.metadata["origin"] == "curated"
    assert skill.metadata["status"] == "verified"
    tags = [t.strip() for t in skill.metadata.get("tags", "").split(",")]
    assert tags and all(tags), f"{skill.name}: tags must be a comma-separated list"
    lines = len(skill.body.splitlines())
    assert 30 <= lines <= 120, f"{skill.name}: body has {lines} lines"


def test_every_hinted_skill_exists():
    have = {p.parent.name for p in SKILL_FILES}
    missing = sorted(set(HINTS.values()) - have)
    assert not missing, f"HINTS point to skills that do not exist: {missing}"


def test_load_skills_returns_them_all():
    loaded = load_skills(SKILLS_ROOT)
    expected = {parse_skill(p.read_text(), p).name for p in SKILL_FILES}
    assert set(loaded) == expected
    assert set(HINTS.values()) <= set(loaded)
    for name, skill in loaded.items():
        assert skill.path is not None and skill.path.parent.name == name


@pytest.mark.parametrize("path", SKILL_FILES, ids=_ids(SKILL_FILES))
def test_skills_teach_only_real_apis(path: Path):
    body = parse_skill(path.read_text(), path).body
    bad_nisa = sorted({m for m in NISA_USE.findall(body) if m not in nisa.__all__})
    bad_nl = sorted({m for m in NL_USE.findall(body) if m not in nl.__all__})
    assert not bad_nisa, f"{path.parent.name}: unknown nisa names {bad_nisa}"
    assert not bad_nl, f"{path.parent.name}: unknown nl names {bad_nl}"


def test_api_regex_catches_unknown_names():
    text = "nisa.dma_copy(dst, src) nisa.iota(x) nl.ndarray((1, 1)) nl.load(t) knight.npu.nisa.x"
    assert [m for m in NISA_USE.findall(text) if m not in nisa.__all__] == ["iota"]
    assert [m for m in NL_USE.findall(text) if m not in nl.__all__] == ["load"]
