"""The curated skills library: every SKILL.md parses, is named after its folder, is loadable,
covers every skill the failure taxonomy points to, and teaches only APIs that exist."""

from __future__ import annotations

import ast
import enum
import inspect
import re
from pathlib import Path

import pytest

from knight.evaluation.categories import HINTS
from knight.npu import nisa, nl
from knight.skill_conditions import ConditionError, matches, parse_condition, profile_metrics
from knight.skills import load_skills, parse_skill

SKILLS_ROOT = Path(__file__).resolve().parents[1] / "skills"
SKILL_FILES = sorted(SKILLS_ROOT.glob("*/SKILL.md"))
REQUIRED = {
    "patching",
    "kernel-language",
    "kernel-rules",
    "sbuf-psum-budget",
    "precision-alignment",
    "reading-the-profile",
    "dma-contiguous-runs",
    "dma-queues-and-engines",
    "double-buffering",
    "psum-banks-and-readout",
    "core-sharding",
    "gemv-orientation",
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
    assert len(skill.description) < 300, (
        f"{skill.name}: description is {len(skill.description)} characters"
    )
    assert skill.metadata.get("origin") in ("curated", "learned")
    assert skill.metadata.get("status") in ("candidate", "verified", "deprecated")
    assert skill.body.strip()


@pytest.mark.parametrize(
    "path",
    [p for p in SKILL_FILES if p.parent.name in REQUIRED],
    ids=_ids([p for p in SKILL_FILES if p.parent.name in REQUIRED]),
)
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


CODE_BLOCK = re.compile(r"```python\n(.*?)```", re.S)
INLINE_CALL = re.compile(r"`((?:nisa|nl)\.\w+\([^`]*\))`")


def _code_snippets(body: str) -> list[str]:
    """Python code blocks and inline `nisa.x(...)` / `nl.x(...)` spans that parse as code."""
    out = CODE_BLOCK.findall(body)
    for span in INLINE_CALL.findall(body):
        try:
            ast.parse(span)
        except SyntaxError:
            continue  # prose such as `nisa.f(...)` with an ellipsis of words
        out.append(span)
    return out


def _api_call_problems(code: str) -> list[str]:
    """Calls of nisa/nl functions whose keywords, arity or enum values the current API refuses."""
    problems = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            inner = node.value  # nisa.engine.sync: the enum member must exist
            if isinstance(inner.value, ast.Name) and inner.value.id == "nisa":
                cls = getattr(nisa, inner.attr, None)
                if isinstance(cls, type) and issubclass(cls, enum.Enum):
                    if node.attr not in cls.__members__:
                        problems.append(f"nisa.{inner.attr}.{node.attr}")
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value
        if not (isinstance(owner, ast.Name) and owner.id in ("nisa", "nl")):
            continue
        fn = getattr(nisa if owner.id == "nisa" else nl, node.func.attr, None)
        if not callable(fn) or isinstance(fn, type):
            continue
        params = inspect.signature(fn).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            continue
        name = f"{owner.id}.{node.func.attr}"
        positional = [p for p in params.values() if p.kind is not p.KEYWORD_ONLY]
        if not any(p.kind is p.VAR_POSITIONAL for p in params.values()) and len(node.args) > len(
            positional
        ):
            problems.append(f"{name}: {len(node.args)} positional arguments")
        given = {p.name for p in positional[: len(node.args)]} | {k.arg for k in node.keywords}
        required = [
            p.name
            for p in params.values()
            if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        elided = any(isinstance(a, ast.Constant) and a.value is Ellipsis for a in node.args)
        if (
            None not in given
            and not elided
            and not any(isinstance(a, ast.Starred) for a in node.args)
        ):
            problems += [f"{name}: missing {r!r}" for r in required if r not in given]
        for kw in node.keywords:
            if kw.arg is None:
                continue
            if kw.arg not in params:
                problems.append(f"{name}: no parameter {kw.arg!r}")
            elif isinstance(params[kw.arg].default, enum.Enum) and isinstance(
                kw.value, ast.Constant
            ):
                problems.append(
                    f"{name}: {kw.arg}= takes a nisa enum member, not {kw.value.value!r}"
                )
    return problems


@pytest.mark.parametrize("path", SKILL_FILES, ids=_ids(SKILL_FILES))
def test_skill_code_examples_use_the_current_api(path: Path):
    body = parse_skill(path.read_text(), path).body
    problems = [p for block in _code_snippets(body) for p in _api_call_problems(block)]
    assert not problems, f"{path.parent.name}: {problems}"


def test_api_call_check_catches_stale_keywords():
    code = 'nisa.dma_copy(dst=a, src=b, engine="sync", queue=3)\nnisa.engine.nope'
    assert sorted(_api_call_problems(code)) == sorted(
        [
            "nisa.engine.nope",
            "nisa.dma_copy: engine= takes a nisa enum member, not 'sync'",
            "nisa.dma_copy: no parameter 'queue'",
        ]
    )


@pytest.mark.parametrize("path", SKILL_FILES, ids=_ids(SKILL_FILES))
def test_applies_when_conditions_parse(path: Path):
    skill = parse_skill(path.read_text(), path)
    condition = skill.metadata.get("applies-when")
    if condition is not None:
        assert parse_condition(condition), f"{skill.name}: empty applies-when"


def test_technique_skills_say_when_they_apply():
    techniques = {
        "core-sharding",
        "dma-contiguous-runs",
        "dma-queues-and-engines",
        "double-buffering",
        "gemv-orientation",
        "psum-banks-and-readout",
    }
    loaded = load_skills(SKILLS_ROOT)
    assert all("applies-when" in loaded[name].metadata for name in techniques)


def test_applies_when_matches_a_profile():
    small_dma = {
        "bottleneck": "DMA-latency-bound: 90% of the critical path is DMA",
        "engines": {
            "core0.dma": {"busy_ns": 1.0, "utilisation": 0.4},
            "core1.dma": {"busy_ns": 1.0, "utilisation": 0.3},
        },
        "dma": {
            "bytes": 1000,
            "active_share": 0.5,
            "histogram": [
                {"bucket": "<256B", "count": 10, "bytes": 800},
                {"bucket": ">=4KiB", "count": 1, "bytes": 200},
            ],
        },
        "critical_path_ns": 100.0,
        "critical_by_engine": [["dma_fixed", 60.0], ["dma_transfer", 30.0], ["tensor", 10.0]],
        "hbm_utilisation": 0.1,
        "cross_core": {"sendrecv": 0},
    }
    m = profile_metrics(small_dma)
    assert m["bottleneck"] == "dma_latency" and m["cores"] == 2
    assert m["dma_small_chunk_share"] == pytest.approx(0.8)
    assert m["critical_dma_fixed"] == pytest.approx(0.6)
    loaded = load_skills(SKILLS_ROOT)
    assert matches(loaded["dma-contiguous-runs"].metadata["applies-when"], m)
    assert matches(loaded["core-sharding"].metadata["applies-when"], m)
    assert not matches(loaded["gemv-orientation"].metadata["applies-when"], m)
    one_core = {**small_dma, "engines": {"core0.dma": {"busy_ns": 1.0, "utilisation": 0.4}}}
    assert not matches(loaded["core-sharding"].metadata["applies-when"], profile_metrics(one_core))


@pytest.mark.parametrize(
    "bad", ["bottleneck", "latency > 3", "bottleneck > dma", "cores == 2 and", "x === 1"]
)
def test_applies_when_rejects_bad_conditions(bad: str):
    with pytest.raises(ConditionError):
        parse_condition(bad)
