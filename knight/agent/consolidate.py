"""Consolidation: verified experience becomes skills with provenance.

Accepted iterations (correct on visible and held-out workloads, integrity clean, faster than
their parent) become `learned-*` skills carrying the patch, the measured gain and the iteration
ids. Failure categories that recur in a run become a pitfall skill listing what went wrong.
Learned skills start with status `candidate`; a person promotes them to `verified`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from knight.failure import Category, IterationStatus
from knight.skill_conditions import bottleneck_word
from knight.skills import Skill, write_skill
from knight.store import IterationDetail, IterationSummary, RunStore

MIN_REPEATS = 2  # a failure category seen this often in one run is a pitfall


@dataclass
class ConsolidationResult:
    """Skill folders written, and names kept because they already exist."""

    written: list[str]
    skipped: list[str]


def consolidate(store: RunStore, run_id: int, root: Path) -> ConsolidationResult:
    """Write learned skills and pitfalls for `run_id` under `root` (existing names are kept)."""
    # Every existing folder counts, deprecated skills included: a person's verdict is never undone.
    existing = (
        {p.name for p in root.iterdir() if (p / "SKILL.md").is_file()} if root.is_dir() else set()
    )
    result = ConsolidationResult([], [])
    for skill in _skills_for_run(store, run_id):
        if skill.name in existing:
            result.skipped.append(skill.name)
            continue
        write_skill(root, skill)
        result.written.append(skill.name)
    return result


def _skills_for_run(store: RunStore, run_id: int) -> list[Skill]:
    problem = store.run(run_id).problem_id
    rows = store.history(run_id)
    accepted = [r for r in rows if r.status is IterationStatus.accepted]
    skills = [_win(problem, run_id, store.iteration(run_id, r.number)) for r in accepted]
    failures: dict[Category, list[IterationSummary]] = defaultdict(list)
    for it in rows:
        if it.status is IterationStatus.failed and it.category not in (
            None,
            Category.proposer_error,
        ):
            failures[it.category].append(it)
    skills += [
        _pitfall(problem, run_id, category, its)
        for category, its in sorted(failures.items())
        if len(its) >= MIN_REPEATS
    ]
    return skills


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "change"


def _win(problem: str, run_id: int, it: IterationDetail) -> Skill:
    gain = it.speedup_vs_parent or 1.0
    body = "\n".join(
        [
            f"# {it.hypothesis}",
            "",
            f"Measured on `{problem}`: {gain:.3f}x faster than its parent "
            f"({(it.parent_score_ns or 0) / 1000:.2f} -> {(it.score_ns or 0) / 1000:.2f} us), bit-exact on every "
            "visible and held-out workload.",
            "",
            f"Why: {it.rationale or '(no rationale recorded)'}",
            "",
            "The patch:",
            "```diff",
            it.diff.rstrip(),
            "```",
            "",
            f"Evidence: run {run_id}, iteration {it.number}, harness {it.harness}.",
        ]
    )
    return Skill(
        name=f"learned-{problem.replace('_', '-')}-{_slug(it.hypothesis)}-{run_id}-{it.number}",
        description=f"Learned on {problem}: {it.hypothesis[:160]} ({gain:.2f}x). Use when the same bottleneck shows.",
        body=body,
        metadata={
            "origin": "learned",
            "status": "candidate",
            "tags": ",".join(it.tags),
            "evidence": f"run {run_id} iteration {it.number}",
            "problem": problem,
            "run": str(run_id),
            "iteration": str(it.number),
            "gain": f"{gain:.4f}",
            # Consolidation does not re-run the patch; `knight replay` verifies the lineage.
            "replay": "not replayed",
            **_applies_when(it),
        },
    )


def _applies_when(it: IterationDetail) -> dict[str, str]:
    """The bottleneck the accepted change relieved, from its parent's profile, as a condition."""
    word = bottleneck_word(it.parent_profile.get("bottleneck", "")) if it.parent_profile else ""
    return {"applies-when": f"bottleneck == {word}"} if word and word != "unknown" else {}


def _pitfall(problem: str, run_id: int, category: Category, its: list[IterationSummary]) -> Skill:
    lines = [f"# Pitfall: {category} ({len(its)} times in run {run_id} on `{problem}`)", ""]
    for it in its[:10]:
        lines.append(f"- iteration {it.number}: {it.hypothesis} -> {(it.message or '')[:200]}")
    return Skill(
        name=f"pitfall-{problem.replace('_', '-')}-{category.replace('_', '-')}-{run_id}",
        description=f"Recurring {category} failures on {problem}: what was tried and why it failed. Read before similar edits.",
        body="\n".join(lines),
        metadata={
            "origin": "learned",
            "status": "candidate",
            "tags": f"pitfall,{category}",
            "evidence": ", ".join(f"run {run_id} iteration {it.number}" for it in its[:10]),
            "problem": problem,
        },
    )
