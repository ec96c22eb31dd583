"""The one failure model (DESIGN.md, "Failure taxonomy"): every way an attempt can fail, the
pipeline stage it belongs to, the skill that explains the usual fix, and the `Failure` record that
every layer (patching, evaluation, the loop, the store, proposers, the CLI) passes around.

Statuses of iterations and runs live here too, so each closed set of names has one definition.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, model_validator

from knight.npu.errors import CATEGORIES as SIMULATOR_CATEGORIES


class Stage(StrEnum):
    """Where in the pipeline an attempt failed."""

    proposal = "proposal"
    patch = "patch"
    static = "static"
    trace = "trace"
    run = "run"
    correctness = "correctness"
    integrity = "integrity"
    performance = "performance"


# Every category, by the stage it belongs to: the one list of the taxonomy. The trace stage is the
# simulator's own error classes (`knight.npu.errors`), which cannot import this module.
_NAMES_BY_STAGE: dict[Stage, tuple[str, ...]] = {
    Stage.proposal: ("proposer_error", "malformed_proposal"),
    Stage.patch: (
        "patch_no_match",
        "patch_ambiguous",
        "patch_outside_editable",
        "patch_noop",
        "duplicate_candidate",
    ),
    Stage.static: ("syntax_error", "forbidden_construct"),
    Stage.trace: SIMULATOR_CATEGORIES,
    Stage.run: ("timeout", "memory_limit", "worker_crash"),
    Stage.correctness: ("mismatch_rounding", "mismatch_partial", "mismatch_values", "nan_or_inf"),
    Stage.integrity: (
        "input_mutation",
        "nondeterministic",
        "input_independent",
        "below_physical_floor",
        "heldout_failure",
    ),
    Stage.performance: ("regression", "no_gain"),
}

Category = StrEnum(
    "Category",
    [(name, name) for names in _NAMES_BY_STAGE.values() for name in names],
    module=__name__,
    qualname="Category",
)
Category.__doc__ = (
    "The closed failure taxonomy; extend deliberately (a new member needs a stage and a hint)."
)

C = Category
STAGES: dict[Stage, tuple[Category, ...]] = {
    stage: tuple(Category(name) for name in names) for stage, names in _NAMES_BY_STAGE.items()
}

# The skill (skills/<name>/SKILL.md) a proposer should read after each kind of failure.
HINTS: dict[Category, str] = {
    C.patch_no_match: "patching",
    C.patch_ambiguous: "patching",
    C.patch_outside_editable: "patching",
    C.patch_noop: "patching",
    C.duplicate_candidate: "patching",
    C.syntax_error: "kernel-language",
    C.forbidden_construct: "kernel-rules",
    C.shape_error: "kernel-language",
    C.resource_overflow: "sbuf-psum-budget",
    C.illegal_access: "kernel-language",
    C.dtype_error: "kernel-language",
    C.uninitialized_read: "kernel-language",
    C.host_sync: "kernel-rules",
    C.race: "kernel-rules",
    C.kernel_exception: "kernel-language",
    C.timeout: "kernel-rules",
    C.memory_limit: "kernel-rules",
    C.worker_crash: "kernel-rules",
    C.mismatch_rounding: "precision-alignment",
    C.mismatch_partial: "precision-alignment",
    C.mismatch_values: "precision-alignment",
    C.nan_or_inf: "precision-alignment",
    C.input_mutation: "kernel-rules",
    C.nondeterministic: "kernel-rules",
    C.input_independent: "kernel-rules",
    C.below_physical_floor: "kernel-rules",
    C.heldout_failure: "kernel-rules",
    C.regression: "reading-the-profile",
    C.no_gain: "reading-the-profile",
}
del C

_STAGE_OF: dict[Category, Stage] = {cat: stage for stage, cats in STAGES.items() for cat in cats}

# Failures a proposer can plausibly fix in the same conversation: its patch did not apply, or
# the candidate broke a rule before it ever ran. A no-op, a duplicate or a slow kernel is not fixed
# by resubmitting the same idea.
FIXABLE: frozenset[Category] = frozenset(
    set(STAGES[Stage.patch]) - {Category.duplicate_candidate, Category.patch_noop}
    | set(STAGES[Stage.static])
    | set(STAGES[Stage.trace])
)


def stage_of(category: Category | str) -> Stage:
    """The pipeline stage a category belongs to."""
    return _STAGE_OF[Category(category)]


class IterationStatus(StrEnum):
    """The verdict on one iteration."""

    accepted = "accepted"
    rejected = "rejected"  # correct but not kept (slower, no gain, duplicate, held-out failure)
    failed = "failed"  # no usable candidate (proposal, patch, trace, run or correctness failure)


class RunStatus(StrEnum):
    """Where a run stands."""

    running = "running"
    finished = "finished"
    interrupted = "interrupted"  # resumable: Ctrl-C, a provider outage, repeated proposer failures
    failed = "failed"


class Failure(BaseModel):
    """Why an attempt failed: category, a sentence for a human, where, details, and a hint.

    Location fields are typed and optional: `file`/`line` in the kernel source, the instruction
    index, engine and core of the simulated NPU, the workload and seed of the run that showed it.
    `details` holds category-specific attribution (mismatch regions, ULP histogram, nearest
    snippets of a patch that did not match).
    """

    category: Category
    message: str
    stage: Stage | None = None  # derived from the category when not given
    file: str | None = None
    line: int | None = None
    instr_index: int | None = None
    engine: str | None = None
    core: int | None = None
    workload: str | None = None
    seed: int | None = None
    edit_index: int | None = None  # which edit of a patch failed to apply
    details: dict[str, Any] = Field(default_factory=dict)
    hint: str | None = None  # the skill to read; derived from the category when not given

    @model_validator(mode="after")
    def _derive_stage_and_hint(self) -> Failure:
        if self.stage is None:
            self.stage = stage_of(self.category)
        if self.hint is None:
            self.hint = HINTS.get(self.category)
        return self

    @property
    def fixable(self) -> bool:
        """Whether a proposer may be asked to fix this in the same conversation."""
        return self.category in FIXABLE

    def location(self) -> str:
        """`file:line` (or just the file), empty when the failure has no source location."""
        if self.file is None:
            return ""
        return f"{self.file}:{self.line}" if self.line else self.file

    def one_line(self) -> str:
        """`category at file:line: message`, for logs, tables and progress lines."""
        where = f" at {self.location()}" if self.file else ""
        return f"{self.category.value}{where}: {self.message}"

    def for_proposer(self) -> str:
        """The failure as a proposer reads it in a fix round: what, where, details, what to do."""
        if self.stage is Stage.patch:
            return _explain_patch(self)
        lines = [f"The candidate failed at the {self.stage} stage: {self.one_line()}"]
        where = {
            name: value
            for name, value in (
                ("instruction", self.instr_index),
                ("engine", self.engine),
                ("core", self.core),
                ("workload", self.workload),
            )
            if value is not None
        }
        if where:
            lines.append("Where: " + ", ".join(f"{k} {v}" for k, v in where.items()))
        if self.details:
            lines.append(f"Details: {self.details}")
        if self.hint:
            lines.append(f"Hint: read skill {self.hint}")
        return "\n".join(lines)


def _explain_patch(failure: Failure) -> str:
    """A multi-line explanation of a patch that did not apply, with what to do about it."""
    if failure.edit_index is not None:
        where = f"Edit {failure.edit_index + 1} on {failure.file}"
    else:
        where = "The patch"
    lines = [f"{where}: {failure.message}."]
    if failure.category is Category.patch_no_match:
        lines += _nearest_lines(failure.details.get("nearest", []))
        lines.append("Copy the SEARCH lines verbatim from the current file.")
    elif failure.category is Category.patch_ambiguous:
        lines.append(
            "Add surrounding lines to the SEARCH text so that it matches exactly one place."
        )
    elif failure.category is Category.patch_outside_editable:
        lines.append("Editable files: " + ", ".join(failure.details.get("editable", [])) + ".")
    elif failure.category is Category.patch_noop:
        lines.append("Propose a change that modifies the kernel's behaviour or schedule.")
    return "\n".join(lines)


def _nearest_lines(nearest: list[dict[str, Any]]) -> list[str]:
    """The real file lines closest to a SEARCH block that matched nowhere, numbered."""
    if not nearest:
        return []
    lines = ["Nearest lines in the current file:"]
    for snippet in nearest:
        first, last = snippet["start_line"], snippet["end_line"]
        where = f"line {first}" if first == last else f"lines {first}-{last}"
        lines.append(f"  {where} (similarity {snippet['ratio']:.2f}):")
        for number, text in enumerate(snippet["text"].split("\n"), start=first):
            lines.append(f"    {number:>4} | {text}")
    return lines
